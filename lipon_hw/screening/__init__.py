"""Sheet screening: the third kind of run (`kind: screening`): a prober's parallel sites
step across a patterned sheet, measure every cell (OCV, impedance, a pulse), bin it, and
map the sheet."""
