"""`qvl-harness bisect`: the first release (or stack state) that broke or fixed something.

candidates (what is searched), oracle (how one probe is judged: good, bad or could-not-judge),
log (every probe, appended), engine (the search), output (what a person sees), cli (wiring).
"""
