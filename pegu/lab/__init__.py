"""The lab (layer 5 of 6): what studies pegu's runs — sweeps over grids (:mod:`.grid`,
:mod:`.sweep`), metrics (:mod:`.metrics`, and the iqa extra :mod:`.iqa`), the notebooks'
comparisons (:mod:`.studies`), figures (:mod:`.plots`) and the explorer (:mod:`.widgets`)."""
