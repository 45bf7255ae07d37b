from rnnexport.cli import main

main(prog_name="rnnexport")
