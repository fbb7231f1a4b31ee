"""Showing the results: a self-contained HTML report (`build_report`), PNGs for papers
(`plots`), and the live dashboard mounted on the service (`dashboard.mount`)."""
