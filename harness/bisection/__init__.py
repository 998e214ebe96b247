"""`qvl-harness bisect`: the first release (or stack state) that broke or fixed something.

request (what was asked), inputs (what is checked before the first probe), candidates (what is searched),
oracle (how one probe is judged: good, bad or could-not-judge), engine (the probe log and the search),
session (probe, log and reporter set up once for releases, commits and triage), output (what a person
sees), run (the driver), commits (below a release).
"""
