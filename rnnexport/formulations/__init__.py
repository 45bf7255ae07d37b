"""Other formulations of the same stacked RNN (``modules``) and their side-by-side comparison (``compare``)."""

from rnnexport.formulations.compare import (
                      FormulationResult,
                      FormulationsReport,
                      compare_formulations,
                      dropout_agreement,
                      dropout_masks,
)
from rnnexport.formulations.modules import (
                      BIDIRECTIONAL_NOTE,
                      FORMULATIONS,
                      LayerMajor,
                      Scripted,
                      Stacked,
                      TimeMajor,
                      cell_step,
                      make_formulation,
)

__all__ = ["BIDIRECTIONAL_NOTE", "FORMULATIONS", "FormulationResult", "FormulationsReport", "LayerMajor", "Scripted",
           "Stacked", "TimeMajor", "cell_step", "compare_formulations", "dropout_agreement", "dropout_masks",
           "make_formulation"]
