from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean, pstdev

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from flows.cli import main
from jobs.core.config import GraphSettings, ModelSettings
from jobs.features.neighbourhood import component_features, neighbour_aggregates
from models.evaluate_graph import evaluate_labelled_graph
from models.evaluate_graph.crossval import fold_label_features, ranking_metrics
from models.evaluate_graph.data import EvaluationSet, known_positive_features, read_labelled_graph

NODE_SCHEMA = T.StructType(
    [T.StructField("account_id", T.StringType()), T.StructField("x", T.DoubleType())]
)
EDGE_SCHEMA = T.StructType(
    [T.StructField("src", T.StringType()), T.StructField("dst", T.StringType())]
)
AGGREGATE_SCHEMA = T.StructType(
    [T.StructField("account_id", T.StringType())]
    + [
        field
        for hop in (1, 2)
        for field in (
            T.StructField(f"nbr{hop}_count", T.LongType()),
            T.StructField(f"nbr{hop}_mean_x", T.DoubleType()),
            T.StructField(f"nbr{hop}_max_x", T.DoubleType()),
            T.StructField(f"nbr{hop}_std_x", T.DoubleType()),
        )
    ]
)
X = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 8.0, "e": 16.0, "f": 32.0, "g": 64.0}
# b has degree 3 (a, c, e); a-b appears twice (once reversed), a has a self loop, g is isolated,
# and "ghost" is not a node.
EDGES = [("a", "b"), ("b", "a"), ("a", "a"), ("b", "c"), ("b", "e"), ("c", "d"), ("f", "e")]
EDGES_WITH_GHOST = [*EDGES, ("d", "ghost")]


def summary(members: list[str]) -> tuple:
    values = [X[m] for m in members]
    if not values:
        return (0, None, None, None)
    return (len(values), mean(values), max(values), pstdev(values))


def expected_row(node: str, first: list[str], second: list[str]) -> tuple:
    return (node, *summary(first), *summary(second))


@pytest.fixture
def tiny_graph(spark):
    nodes = spark.createDataFrame(list(X.items()), NODE_SCHEMA)
    edges = spark.createDataFrame(EDGES_WITH_GHOST, EDGE_SCHEMA)
    return nodes, edges


def test_neighbour_aggregates_by_hand_with_the_degree_cap(spark, tiny_graph):
    nodes, edges = tiny_graph
    # max_degree=2: b (degree 3) is a 1-hop neighbour but is not expanded through.
    expected = spark.createDataFrame(
        [
            expected_row("a", ["b"], ["b"]),
            expected_row("b", ["a", "c", "e"], ["a", "c", "e", "d", "f"]),
            expected_row("c", ["b", "d"], ["b", "d"]),
            expected_row("d", ["c"], ["c", "b"]),
            expected_row("e", ["b", "f"], ["b", "f"]),
            expected_row("f", ["e"], ["e", "b"]),
            expected_row("g", [], []),
        ],
        AGGREGATE_SCHEMA,
    )
    actual = neighbour_aggregates(nodes, edges, ["x"], hops=2, max_degree=2)
    assertDataFrameEqual(actual, expected)


def test_neighbour_aggregates_expand_through_nodes_under_the_cap(spark, tiny_graph):
    nodes, edges = tiny_graph
    actual = neighbour_aggregates(nodes, edges, ["x"], hops=2, max_degree=3).where(
        "account_id IN ('a', 'd')"
    )
    expected = spark.createDataFrame(
        [
            expected_row("a", ["b"], ["b", "c", "e"]),
            expected_row("d", ["c"], ["c", "b"]),
        ],
        AGGREGATE_SCHEMA,
    )
    assertDataFrameEqual(actual, expected)


def test_one_hop_only(spark, tiny_graph):
    nodes, edges = tiny_graph
    actual = neighbour_aggregates(nodes, edges, ["x"], hops=1).where("account_id = 'b'")
    schema = T.StructType(AGGREGATE_SCHEMA.fields[:5])
    assertDataFrameEqual(actual, spark.createDataFrame([("b", 3, 7.0, 16.0, 42**0.5)], schema))


def test_component_features_by_hand(spark, tiny_graph):
    nodes, edges = tiny_graph
    actual = component_features(nodes, edges, GraphSettings(components_backend="local"))
    schema = T.StructType(
        [
            T.StructField("account_id", T.StringType()),
            T.StructField("component_id", T.StringType()),
            T.StructField("component_size", T.DoubleType()),
            T.StructField("component_log_size", T.DoubleType()),
            T.StructField("component_density", T.DoubleType()),
        ]
    )
    # a..f: 6 nodes, 5 distinct edges (a-b, b-c, b-e, c-d, e-f) of 15 pairs; g alone.
    big = ("a", 6.0, float(np.log1p(6.0)), 5 / 15)
    expected = [(n, *big) for n in "abcdef"] + [("g", "g", 1.0, float(np.log1p(1.0)), 0.0)]
    assertDataFrameEqual(actual, spark.createDataFrame(expected, schema))


def test_neighbour_aggregates_name_the_missing_column(spark, tiny_graph):
    nodes, edges = tiny_graph
    with pytest.raises(ValueError, match="node_features is missing column 'y'"):
        neighbour_aggregates(nodes, edges, ["x", "y"])
    with pytest.raises(ValueError, match="edges is missing column 'dst'"):
        neighbour_aggregates(nodes, edges.drop("dst"), ["x"])
    with pytest.raises(ValueError, match="hops must be 1 or 2"):
        neighbour_aggregates(nodes, edges, ["x"], hops=3)


def test_known_positive_features_never_use_the_own_label():
    # components: {0, 1, 2} and {3}; path 0-1-2, 3 isolated
    components = np.array([0, 0, 0, 1])
    pairs = (np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]))
    labels = np.array([1, 1, 0, 1])
    known = np.array([True, True, True, False])
    nan = np.nan
    expected = np.array(
        [
            # nbr positives, nbr share, other component positives, component share
            [1, 1.0, 1, 0.5],  # 0: neighbour 1 (+); others 1 (+), 2 (-)
            [1, 0.5, 1, 0.5],  # 1: neighbours 0 (+), 2 (-); others 0 (+), 2 (-)
            [1, 1.0, 2, 1.0],  # 2: neighbour 1 (+); others 0 (+), 1 (+)
            [0, nan, 0, nan],  # 3: nothing known around it
        ]
    )
    actual = known_positive_features(components, pairs, labels, known)
    np.testing.assert_allclose(actual, expected)
    own_flipped = labels.copy()
    own_flipped[0] = 0
    flipped = known_positive_features(components, pairs, own_flipped, known)
    # flipping node 0's own label changes its neighbours' features, never its own
    np.testing.assert_allclose(flipped[0], actual[0])
    assert not np.allclose(flipped[1], actual[1])


def test_fold_label_features_ignore_test_labels_and_the_own_label():
    rng = np.random.default_rng(5)
    n = 60
    labels = (rng.random(n) < 0.3).astype(int)
    node = rng.integers(0, n, 150)
    other = rng.integers(0, n, 150)
    keep = node != other
    pairs = (np.concatenate([node[keep], other[keep]]), np.concatenate([other[keep], node[keep]]))
    evaluation = EvaluationSet(
        frame=pd.DataFrame({"id": [f"n{i:02d}" for i in range(n)], "label": labels}),
        node_features=(),
        structural_features=(),
        component_codes=np.arange(n) % 4,
        pair_rows=pairs,
    )
    train_rows = np.flatnonzero(np.arange(n) % 5 != 0)
    test_rows = np.flatnonzero(np.arange(n) % 5 == 0)
    before = fold_label_features(evaluation, train_rows, 3, seed=1)

    flipped_test = labels.copy()
    flipped_test[test_rows] = 1 - flipped_test[test_rows]
    after = fold_label_features(
        EvaluationSet(
            evaluation.frame.assign(label=flipped_test), (), (), evaluation.component_codes, pairs
        ),
        train_rows,
        3,
        seed=1,
    )
    np.testing.assert_array_equal(after, before)  # test labels are never used

    for row in train_rows[:10]:
        flipped_own = labels.copy()
        flipped_own[row] = 1 - flipped_own[row]
        after = fold_label_features(
            EvaluationSet(
                evaluation.frame.assign(label=flipped_own),
                (),
                (),
                evaluation.component_codes,
                pairs,
            ),
            train_rows,
            3,
            seed=1,
        )
        np.testing.assert_array_equal(after[row], before[row])  # nor the node's own label
    # ... while training labels do reach the test rows
    assert not np.isnan(before[test_rows][:, 3]).all()


def test_rec_at_k_is_the_share_of_positives_in_the_top_k():
    labels = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.6])
    metrics = ranking_metrics(labels, scores)
    # top 3: rows 0 (+), 1 (-), 3 (-)
    assert metrics["k"] == 3
    assert metrics["rec_at_k"] == pytest.approx(1 / 3)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def test_bad_inputs_are_named_with_their_file(spark, tmp_path, capsys):
    nodes = pd.DataFrame({"id": ["a", "b", "c"], "label": [0, 1, 2], "x": [1.0, 2.0, 3.0]})
    edges = pd.DataFrame({"src": ["a"], "dst": ["b"]})
    nodes_path = _write(nodes, tmp_path / "nodes.parquet")
    edges_path = _write(edges, tmp_path / "edges.parquet")
    with pytest.raises(ValueError, match=r"nodes\.parquet: column 'label' must be 0 or 1; 1 rows"):
        read_labelled_graph(spark, nodes_path, edges_path)

    no_label = _write(nodes.drop(columns="label"), tmp_path / "no_label.parquet")
    with pytest.raises(ValueError, match=r"no_label\.parquet is missing column 'label'"):
        read_labelled_graph(spark, no_label, edges_path)
    no_dst = _write(edges.drop(columns="dst"), tmp_path / "no_dst.parquet")
    good_nodes = _write(nodes.assign(label=[0, 1, 0]), tmp_path / "good.parquet")
    with pytest.raises(ValueError, match=r"no_dst\.parquet is missing column 'dst'"):
        read_labelled_graph(spark, good_nodes, no_dst)
    twice = _write(nodes.assign(id=["a", "a", "c"], label=[0, 1, 0]), tmp_path / "twice.parquet")
    with pytest.raises(ValueError, match=r"twice\.parquet: 1 duplicate 'id' values"):
        read_labelled_graph(spark, twice, edges_path)

    # through the command line: exit 1, one line naming file and column
    code = main(["evaluate-graph", "--nodes", str(no_label), "--edges", str(edges_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no_label.parquet is missing column 'label'" in err[0]


def planted_graph(folder: Path, n: int = 2000, seed: int = 3) -> tuple[Path, Path, int]:
    """Fraud rings as dense groups whose own features are barely shifted.

    Legitimate nodes form a sparse random graph with a few equally dense legitimate groups
    (families, offices) as confounders; each ring member also links to a random legitimate
    node. Returns the two files and the number of planted positives.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    rings = [order[i * 10 : (i + 1) * 10] for i in range(12)]  # 120 positives
    offices = [order[120 + i * 10 : 120 + (i + 1) * 10] for i in range(12)]
    label = np.zeros(n, dtype=int)
    label[np.concatenate(rings)] = 1
    features = rng.normal(size=(n, 4))
    features[:, 0] += 0.35 * label  # weakly informative on its own
    nodes = pd.DataFrame(features, columns=["requests", "age", "decline rate", "n_ips"])
    nodes.insert(0, "label", label)
    nodes.insert(0, "id", [f"n{i:05d}" for i in range(n)])
    nodes["country"] = "xx"  # non-numeric: ignored

    legit = np.flatnonzero(label == 0)
    pairs = [tuple(rng.choice(legit, 2, replace=False)) for _ in range(int(0.8 * n))]
    for group in rings + offices:
        pairs += [(a, b) for i, a in enumerate(group) for b in group[i + 1 :] if rng.random() < 0.5]
    for group in rings:
        pairs += [(a, rng.choice(legit)) for a in group]
    pairs += [(b, a) for a, b in pairs[:40]] + [(a, a) for a, _ in pairs[:5]]
    ids = nodes["id"].to_numpy()
    edges = pd.DataFrame({"src": ids[[a for a, _ in pairs]], "dst": ids[[b for _, b in pairs]]})
    edges["type"] = np.where(rng.random(len(edges)) < 0.5, "device", "card")
    ghosts = pd.DataFrame({"src": ids[:7], "dst": [f"ghost{i}" for i in range(7)], "type": "ip"})
    edges = pd.concat([edges, ghosts], ignore_index=True)
    return (
        _write(nodes, folder / "nodes.parquet"),
        _write(edges, folder / "edges.parquet"),
        int(label.sum()),
    )


def test_evaluate_graph_end_to_end(spark, farmwatch_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FARMWATCH_SPARK__SHUFFLE_PARTITIONS", "2")  # keep the shared session's
    nodes_path, edges_path, positives = planted_graph(tmp_path)
    result_path = tmp_path / "result.json"
    code = main(
        [
            "evaluate-graph",
            "--nodes",
            str(nodes_path),
            "--edges",
            str(edges_path),
            "--json",
            str(result_path),
        ]
    )
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    result = json.loads(result_path.read_text())
    graph = result["graph"]
    assert (graph["nodes"], graph["positives"], graph["node_features"]) == (2000, positives, 4)
    assert graph["edges_unknown_node"] == 7
    examples = graph["unknown_node_examples"]
    assert len(examples) == 3 and all(e.startswith("ghost") for e in examples)
    assert graph["ignored_columns"] == ["country"]
    assert graph["renamed_columns"] == {"decline rate": "decline_rate"}
    assert "7 reference unknown node ids (ignored)" in out

    rows = {}
    for arm in ("without graph", "with graph", "graph if it helps"):
        match = re.search(rf"^{arm}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, re.M)
        assert match, f"no {arm!r} row in:\n{out}"
        rows[arm] = [float(v) for v in match.groups()]
    key = {
        "without graph": "without_graph",
        "with graph": "with_graph",
        "graph if it helps": "graph_if_it_helps",
    }
    for arm, (auroc, auprc, rec_at_k) in rows.items():
        metrics = result[key[arm]]
        assert metrics["k"] == positives
        assert (auroc, auprc, rec_at_k) == pytest.approx(
            (metrics["auroc"], metrics["auprc"], metrics["rec_at_k"]), abs=5e-5
        )
    # the rings are only visible through the graph
    assert result["with_graph"]["auprc"] > result["without_graph"]["auprc"] + 0.2
    assert result["with_graph"]["rec_at_k"] > result["without_graph"]["rec_at_k"]
    # the training folds see that the graph helps: every fold keeps it
    assert result["graph_if_it_helps"]["chosen_by_fold"] == ["with_graph"] * result["folds"]
    assert result["graph_if_it_helps"]["auprc"] == result["with_graph"]["auprc"]


def test_a_graph_that_carries_nothing_cannot_lower_the_result(spark, tmp_path):
    """Labels come from the node features alone and edges are random: graph features are
    noise, and the arm that keeps them only where they help stays at the node-only figure."""
    rng = np.random.default_rng(11)
    n = 1500
    features = rng.normal(size=(n, 4))
    label = (features[:, 0] + 0.8 * features[:, 1] + rng.normal(0, 0.6, n) > 1.6).astype(int)
    nodes = pd.DataFrame(features, columns=["f0", "f1", "f2", "f3"])
    nodes.insert(0, "label", label)
    nodes.insert(0, "id", [f"n{i:05d}" for i in range(n)])
    pairs = rng.integers(0, n, size=(2 * n, 2))
    ids = nodes["id"].to_numpy()
    edges = pd.DataFrame({"src": ids[pairs[:, 0]], "dst": ids[pairs[:, 1]]})
    result = evaluate_labelled_graph(
        spark,
        _write(nodes, tmp_path / "nodes.parquet"),
        _write(edges, tmp_path / "edges.parquet"),
        ModelSettings(),
        folds=4,
        seed=3,
    )
    chosen = result["graph_if_it_helps"]
    assert chosen["auprc"] >= result["without_graph"]["auprc"] - 0.01
    assert chosen["auroc"] >= result["without_graph"]["auroc"] - 0.005
    assert len(chosen["inner_auprc_by_fold"]) == 4
