from stance_studio.core.experiment_tables import cells, headers, to_csv, to_markdown


def _col(kind, header, row):
    return cells(kind, row)[headers(kind).index(header)]


def test_one_run_shows_intervals_and_seeds_show_spread():
    one = {"method": "full", "stance_rate": 0.6, "stance_rate_ci95": [0.5, 0.7], "stance_rate_reliable": True,
           "stance_fit_nats": 0.25, "stance_fit_nats_ci95": [0.1, 0.4], "trainable_params": 10}
    assert _col("methods", "stance rate", one) == "0.60 [0.50, 0.70]"
    assert _col("methods", "stance fit (nats/token)", one) == "+0.250 [+0.100, +0.400]"
    assert _col("methods", "trainable params", one) == "10"  # sizes carry no interval
    seeds = {"method": "full", "seeds": 3, "stance_rate": 0.6, "stance_rate_spread": 0.05,
             "stance_rate_ci95": [0.5, 0.7], "retention": 0.9}
    assert _col("methods", "stance rate", seeds) == "0.60 ± 0.05"
    assert _col("policies", "retention", {"policy": "all", "seeds": 2, "retention": 0.9, "retention_spread": 0.01}) \
        == "0.900 ± 0.010"


def test_an_unreliable_rate_says_so_everywhere():
    row = {"method": "full", "stance_rate": 0.4, "stance_rate_ci95": [0.3, 0.5], "stance_rate_reliable": False}
    assert _col("methods", "stance rate", row).endswith("(unreliable)")
    assert "(unreliable)" in to_markdown("methods", [row])


def test_csv_has_the_bounds_and_spreads():
    rows = [{"method": "full", "stance_rate": 0.6, "stance_rate_ci95": [0.5, 0.7]},
            {"method": "lora", "stance_rate": 0.2, "stance_rate_spread": 0.1, "seeds": 3}]
    lines = to_csv("methods", rows).splitlines()
    head = lines[0].split(",")
    assert {"stance_rate_ci95_low", "stance_rate_ci95_high", "stance_rate_spread"} <= set(head)
    first = dict(zip(head, lines[1].split(",")))
    assert first["stance_rate_ci95_low"] == "0.5" and first["stance_rate_ci95_high"] == "0.7"
