"""The Panel dashboard of gcd: generate structures from a checkpoint, watch them anneal, export them.

``panel serve app/main.py`` serves it. ``app.state`` holds the per-session state (no Panel in it),
``app.views`` the Panel components and ``app.main`` the page; ``app.atoms_view`` is the py3Dmol viewer,
``app.vtk_patch`` a browser-side fix for streaming volumes, ``app.fetch_js`` installs 3Dmol.js and
``app.driver`` drives the served page in headless Chromium (browser tests, screenshots, load test).
"""
