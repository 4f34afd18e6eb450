"""multiplier_panels: one panel per behavior, one line per method, one legend entry each."""

import pandas as pd
import plotly.graph_objects as go
import pytest

from steerlab.errors import ConfigError
from steerlab.viz import multiplier_panels
from tests.test_viz_reports import MULTS, synthetic_frame


def test_one_panel_per_facet_and_one_legend_entry_per_method():
    frame = synthetic_frame()
    frame = frame[frame["layer"] == 8].copy()
    two = [frame.assign(behavior="power"), frame.assign(behavior="wealth")]
    fig = multiplier_panels(pd.concat(two, ignore_index=True), "margin", cols=1)
    assert isinstance(fig, go.Figure)
    methods = list(dict.fromkeys(frame["method"]))
    assert len(fig.data) == 2 * len(methods)
    assert [t.name for t in fig.data if t.showlegend] == methods
    assert [a.text for a in fig.layout.annotations] == ["power", "wealth"]
    assert list(fig.data[0].x) == list(MULTS)
    assert fig.data[len(methods)].yaxis == "y2"  # the second behavior is in its own panel
    colors = {t.name: t.line.color for t in fig.data}
    assert all(t.line.color == colors[t.name] for t in fig.data)
    with pytest.raises(ConfigError, match="No column 'behavior'"):
        multiplier_panels(frame, "margin")
