"""The Panel dashboard of gcd: generate structures from a checkpoint, watch them anneal, export them.

``panel serve app/main.py`` serves it. ``app.state`` holds the per-session state (no Panel in it),
``app.views`` the Panel components and ``app.main`` the page.
"""
