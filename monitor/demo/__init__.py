"""`make demo` (`python -m monitor.demo`): the closed loop on embedded defaults.

run.py orchestrates (models, broker, daemon, traffic, scenario), timeline.py
follows the daemon through its own endpoints, charts.py draws the PNG charts.
"""
