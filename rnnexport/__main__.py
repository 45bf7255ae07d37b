from rnnexport.cli import run

run()
