"""BioCLIP 2's evaluation protocols (bioclip_hf.evaluation.protocols): species tasks (zero-shot, SimpleShot),
the probes (FishNet, AwA2, NeWT) and bad input.

Each protocol is checked against a reference written in the test, straight-line, from the structure of the
original script (Imageomics/bioclip-2 src/evaluation/<file>), on the same synthetic Gaussian-cluster features:
identical predictions, metrics within 1e-6. Herbarium19 and PlantDoc: tests/test_evaluation_protocols_gcd.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm
import torch
from support.protocol_features import METRIC_ATOL, clusters, normalize
from support.tolerances import FEATURE_ATOL

from bioclip_hf.evaluation.protocols import (
    OPENAI_IMAGENET_TEMPLATES,
    PRIMARY_METRIC,
    PROTOCOLS,
    TaskFeatures,
    class_labels,
    class_text,
    simpleshot_metrics,
    text_classifier,
    zero_shot_metrics,
)
from bioclip_hf.evaluation.protocols.fishnet import TRAIT_COLUMNS
from bioclip_hf.evaluation.protocols.mlp_probe import train_probe_run
from bioclip_hf.evaluation.protocols.simpleshot import class_groups, nearest_centroid_predictions, split_support

# ---------------------------------------------------------------------------------------------- zero-shot


def test_templates_are_bioclip2s_81():
    from bioclip_hf.treeoflife.taxonomy import OPENAI_TEMPLATES

    assert len(OPENAI_IMAGENET_TEMPLATES) == 81
    # bioclip-2's list is "a photo of {}." followed by CLIP's 80 ImageNet templates in their order.
    assert OPENAI_IMAGENET_TEMPLATES[0] == "a photo of {}."
    assert OPENAI_IMAGENET_TEMPLATES[1:] == list(OPENAI_TEMPLATES)


RAVEN = {
    "kingdom": "animalia",
    "phylum": "Chordata",
    "cls": "aves",
    "order": "Passeriformes",
    "family": "Corvidae",
    "genus": "corvus",
    "species": "Corax",
    "common_name": "common raven",
    "class": "Corvus corax",
}


@pytest.mark.parametrize(
    ("row", "text_type", "expected"),
    [
        (RAVEN, "asis", "Corvus corax"),
        (RAVEN, "sci", "Corvus corax"),
        (RAVEN, "com", "common raven"),
        (RAVEN, "taxon", "Animalia Chordata Aves Passeriformes Corvidae Corvus corax"),
        (RAVEN, "sci_com", "Corvus corax with common name common raven"),
        (
            RAVEN,
            "taxon_com",
            "Animalia Chordata Aves Passeriformes Corvidae Corvus corax with common name common raven",
        ),
        # No kingdom: taxon falls back to genus + species; an empty common name drops the suffix.
        ({**RAVEN, "kingdom": "", "common_name": "nan"}, "taxon_com", "Corvus corax"),
        # Empty ranks stay as empty words (naming_eval joins all seven).
        ({**RAVEN, "family": ""}, "taxon", "Animalia Chordata Aves Passeriformes  Corvus corax"),
        ({**RAVEN, "subspecies": "Varius"}, "sci", "Corvus corax varius"),
        ({"genus": "Corvus", "species": ""}, "sci", "Corvus"),
    ],
)
def test_class_text_follows_naming_eval(row, text_type, expected):
    assert class_text(row, text_type) == expected


def test_class_text_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown text type 'scientific'"):
        class_text(RAVEN, "scientific")
    with pytest.raises(ValueError, match="'class' is missing"):
        class_text({"genus": "Corvus"}, "asis")
    with pytest.raises(ValueError, match="no genus"):
        class_text({"kingdom": "Animalia"}, "sci_com")


def test_class_labels_number_classes_like_dataset_from_file():
    rows = [{"class": c} for c in ["b", "a", "b", "c", "a"]]
    assert class_labels(rows) == (["b", "a", "c"], pytest.approx(np.array([0, 1, 0, 2, 1])))
    # A class_idx column gives the numbering (DatasetFromFile keeps it).
    rows = [{"class": c, "class_idx": i} for c, i in [("b", "1"), ("a", "0"), ("b", "1")]]
    names, labels = class_labels(rows)
    assert names == ["a", "b"] and labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="class_idx"):
        class_labels([{"class": "a", "class_idx": "0"}, {"class": "b", "class_idx": "0"}])


def test_text_classifier_matches_per_template_computation(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    names = ["Corvus corax", "Pica pica", "Animalia Chordata Aves with common name crow", "Turdus migratorius"]
    weights = text_classifier(model, processor, names)
    assert weights.shape == (4, model.config.projection_dim) and weights.dtype == np.float32
    with torch.no_grad():  # the original's zero_shot_classifier, class by class
        for row, name in enumerate(names):
            ids = processor.tokenize([template.format(name) for template in OPENAI_IMAGENET_TEMPLATES])["input_ids"]
            embedding = torch.nn.functional.normalize(model.encode_text(ids), dim=-1).mean(dim=0)
            embedding /= embedding.norm()
            np.testing.assert_allclose(weights[row], embedding.numpy(), rtol=0, atol=FEATURE_ATOL)


def reference_zero_shot(features, target, classifier, logit_scale, batch_size=256):
    """classification.py evaluate_zero_shot: batches, `accuracy`, top-k keys capped at the class count."""
    classifier = torch.from_numpy(classifier).T  # [D, C], as zero_shot_classifier stacks dim=1
    num_classes = classifier.shape[1]
    topk_keys = sorted({1, min(num_classes, 3), min(num_classes, 5)})
    topk = {k: 0.0 for k in topk_keys}
    n = 0.0
    for start in range(0, len(features), batch_size):
        image_features = torch.from_numpy(features[start : start + batch_size])
        target_batch = torch.from_numpy(target[start : start + batch_size])
        logits = torch.tensor(logit_scale) * image_features @ classifier
        pred = logits.topk(max(topk_keys), 1, True, True)[1].t()
        correct = pred.eq(target_batch.view(1, -1).expand_as(pred))
        for k in topk_keys:
            topk[k] += correct[:k].reshape(-1).float().sum(0, keepdim=True).item()
        n += target_batch.size(0)
    return {k: v / n for k, v in topk.items()}


@pytest.mark.parametrize("n_classes", [12, 4])
def test_zero_shot_matches_reference(n_classes):
    x, labels = clusters(50, n_classes, 16, spread=1.0)
    features = normalize(x)
    rng = np.random.default_rng(1)
    means = np.stack([features[labels == c].mean(0) for c in range(n_classes)])
    classifier = normalize(means + 0.2 * rng.normal(size=means.shape))
    ours = zero_shot_metrics(features, labels, classifier, 100.0)
    ref = reference_zero_shot(features, labels, classifier, 100.0)
    assert 0.3 < ours["zero_shot_top1"] < 1.0  # non-trivial
    for k in (1, 3, 5):
        assert ours[f"zero_shot_top{k}"] == pytest.approx(ref[min(k, n_classes)], abs=METRIC_ATOL)


def test_zero_shot_rejects_bad_input():
    features = normalize(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot_metrics(features, np.array([0, 1, 5]), features, 1.0)
    with pytest.raises(ValueError, match="differ in D"):
        zero_shot_metrics(features, np.array([0, 1, 2]), features[:, :2], 1.0)


# ---------------------------------------------------------------------------------------------- SimpleShot


def reference_few_shot(features, target, kshot, nfold):
    """classification.py split_few_shot_examples + get_few_shot_accuracy, one fold (global random, list copies)."""
    select = {}
    for feature, class_idx in zip(features, target):
        select.setdefault(class_idx, {"feature": []})["feature"].append(feature)
    test, target_out, train, label = [], [], [], []
    random.seed(nfold)
    for class_idx, class_data in select.items():
        feats = class_data["feature"][:]
        random.shuffle(feats)
        train.append(feats[:kshot])
        test.extend(feats[kshot:])
        label.extend([class_idx] * kshot)
        target_out.extend([class_idx] * (len(feats) - kshot))
    flatten_train, label, test, target_out = np.vstack(train), np.array(label), np.vstack(test), np.array(target_out)
    n_class = len(train)
    train_mean = flatten_train.mean(axis=0)

    def cl2n(x):
        x = x - train_mean
        return x / np.linalg.norm(x, 2, 1)[:, None]

    flatten_train, test = cl2n(flatten_train), cl2n(test)
    train_center = flatten_train.reshape(n_class, kshot, flatten_train.shape[-1]).mean(1)
    label = label[::kshot]
    distance = np.linalg.norm(train_center[:, None, :] - test, 2, axis=-1)
    idx = np.argpartition(distance, 1, axis=0)[:1]
    out = scipy.stats.mode(np.take(label, idx), axis=0, keepdims=True)[0].astype(int)
    return float((out == target_out).mean()), out[0]


def test_simpleshot_matches_reference(monkeypatch):
    from bioclip_hf.evaluation.protocols import simpleshot

    x, labels = clusters(9, 10, 16, spread=1.4)
    labels = labels * 7 % 10  # labels in a non-sorted first-appearance order
    features = normalize(x)
    ours = simpleshot_metrics(features, labels, shots=(1, 5), folds=5)
    monkeypatch.setattr(simpleshot, "_BLOCK_BYTES", 3 * 10 * 16 * 4)  # 3 queries per distance block
    for kshot in (1, 5):
        accuracies = []
        for fold in range(5):
            accuracy, predicted = reference_few_shot(features, labels, kshot, fold)
            support, queries = split_support(class_groups(labels), kshot, fold)
            mine = nearest_centroid_predictions(features[support], labels[support], features[queries], kshot)
            np.testing.assert_array_equal(mine, predicted)
            accuracies.append(accuracy)
        assert 0.3 < np.mean(accuracies) < 1.0
        assert ours[f"{kshot}_shot_top1"] == pytest.approx(np.mean(accuracies), abs=METRIC_ATOL)
        assert ours[f"{kshot}_shot_top1_std"] == pytest.approx(np.std(accuracies), abs=METRIC_ATOL)


def test_simpleshot_rejects_bad_input():
    features = normalize(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="class 1 has only 1 images, fewer than k = 5"):
        simpleshot_metrics(features, np.array([0, 0, 0, 0, 0, 1]), shots=(5,))
    with pytest.raises(ValueError, match="at least 2 classes"):
        simpleshot_metrics(features, np.zeros(6, dtype=int))


# ---------------------------------------------------------------------------------------------- MLP probes


class ReferenceFeatures(torch.utils.data.Dataset):
    """fishnet.py / awa2.py `Features`: (x, y, id) per index."""

    def __init__(self, x, y):
        self.x, self.y, self.ids = x, y, np.arange(len(x))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index], self.ids[index]


def reference_probe(train, test, n_out, score, *, seed, runs, epochs, lr, batch_size, eval_every):
    """The runs loop of fishnet.py / awa2.py on the CPU: real DataLoaders, classifier left in train mode."""

    def evaluate(classifier, loader):
        it = iter(loader)
        y_pred, y_true = [], []
        for _ in range(len(loader)):
            features, labels, _ = next(it)
            with torch.no_grad():
                pred_logits = classifier(features)
            y_pred.append((pred_logits > 0.5).numpy())
            y_true.append(labels.numpy())
        y_pred, y_true = np.concatenate(y_pred), np.concatenate(y_true)
        return score(y_true, y_pred), y_pred

    scores = []
    with torch.random.fork_rng(devices=[]):
        for run in range(runs):
            torch.manual_seed(seed + run)
            np.random.seed(seed + run)
            random.seed(seed + run)
            classifier = torch.nn.Sequential(
                torch.nn.Linear(train.x.shape[1], 512), torch.nn.Dropout(0.5), torch.nn.Linear(512, n_out)
            )
            train_loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True)
            test_loader = torch.utils.data.DataLoader(test, batch_size=batch_size, shuffle=False)
            optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
            criterion = torch.nn.BCEWithLogitsLoss()
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
            for epoch in range(epochs):
                it = iter(train_loader)
                for _ in range(len(train_loader)):
                    features, labels, _ = next(it)
                    loss = criterion(classifier(features), labels.to(dtype=torch.float))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                if (epoch + 1) % eval_every == 0:
                    evaluate(classifier, test_loader)
            final, predictions = evaluate(classifier, test_loader)
            scores.append(final)
    return scores, predictions


@pytest.fixture
def one_thread():
    """The probes' tiny matmuls: one torch thread avoids contention on a shared CPU (both sides run the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PROBE_OPTIONS = {"seed": 3, "runs": 2, "epochs": 22, "lr": 3e-3, "batch_size": 32, "eval_every": 5}


def fishnet_rows(labels, traits, rng):
    rows = []
    for i, label in enumerate(labels):
        row = {column: str(int(traits[label, j])) for j, column in enumerate(TRAIT_COLUMNS)}
        row["FeedingPath"] = "pelagic" if traits[label, 0] else "benthic"
        row["split"] = "test" if i % 4 == 0 else "train"
        row["filepath"] = f"Image_Library/f/{i}.jpg"
        if rng.random() < 0.05:
            row[TRAIT_COLUMNS[rng.integers(9)]] = ""  # null trait: the row is dropped
        rows.append(row)
    return rows


def test_fishnet_matches_reference(one_thread):
    x, labels = clusters(24, 5, 12, spread=0.9)
    rng = np.random.default_rng(2)
    rows = fishnet_rows(labels, rng.integers(0, 2, size=(5, 9)), rng)
    ours = PROTOCOLS["fishnet"](TaskFeatures(normalize(x), rows, raw_features=4 * x), PROBE_OPTIONS)

    def split(name):  # ImageDataset: CSV rows without nulls, FeedingPath mapped, labels as the CSV's ints
        kept = [i for i, r in enumerate(rows) if r["split"] == name and all(r[c] != "" for c in TRAIT_COLUMNS)]
        y = [
            [int(r["FeedingPath"] == "pelagic")] + [int(r[c]) for c in TRAIT_COLUMNS[1:]]
            for r in (rows[i] for i in kept)
        ]
        return ReferenceFeatures(torch.from_numpy(4 * x[kept]), torch.tensor(y))

    def accuracy(y_true, y_pred):
        return np.sum(np.all(y_pred == y_true, axis=1)) / len(y_pred)

    ref, ref_predictions = reference_probe(split("train"), split("test"), 9, accuracy, **PROBE_OPTIONS)
    assert 0.2 < np.mean(ref) < 1.0
    assert ours["fishnet_acc"] == pytest.approx(np.mean(ref), abs=METRIC_ATOL)
    assert ours["fishnet_acc_std"] == pytest.approx(np.std(ref), abs=METRIC_ATOL)
    last = PROBE_OPTIONS["seed"] + PROBE_OPTIONS["runs"] - 1
    train, test = split("train"), split("test")
    _, predictions = train_probe_run(
        train.x,
        train.y.float(),
        test.x,
        test.y.numpy(),
        accuracy,
        seed=last,
        **{k: PROBE_OPTIONS[k] for k in ("epochs", "lr", "batch_size", "eval_every")},
    )
    np.testing.assert_array_equal(predictions, ref_predictions)


def write_awa2(root, classes, attributes, train_classes, test_classes, indexed):
    root.mkdir(exist_ok=True)
    lines = [f"{i + 1}\t{name}" if indexed else name for i, name in enumerate(classes)]
    (root / "classes.txt").write_text("\n".join(lines) + "\n")
    (root / "predicate-matrix-binary.txt").write_text("\n".join(" ".join(map(str, a)) for a in attributes) + "\n")
    (root / "trainclasses.txt").write_text("\n".join(train_classes) + "\n")
    (root / "testclasses.txt").write_text("\n".join(test_classes) + "\n")


def test_awa2_matches_reference(tmp_path, one_thread):
    names = [f"animal{i}" for i in range(8)]
    x, labels = clusters(15, 8, 12, spread=0.8)
    attributes = np.random.default_rng(4).integers(0, 2, size=(8, 85))
    attributes[:, :2] = [[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 1]]
    train_classes, test_classes = [names[i] for i in (5, 0, 2, 7, 1, 3)], [names[6], names[4]]
    write_awa2(tmp_path / "plain", names, attributes, train_classes, test_classes, indexed=False)
    write_awa2(tmp_path / "indexed", names, attributes, train_classes, test_classes, indexed=True)
    rows = [{"class": names[label], "filepath": f"JPEGImages/{names[label]}/{i}.jpg"} for i, label in enumerate(labels)]
    ours = PROTOCOLS["awa2"](TaskFeatures(normalize(x), rows, tmp_path / "plain", raw_features=x), PROBE_OPTIONS)
    indexed = PROTOCOLS["awa2"](TaskFeatures(normalize(x), rows, tmp_path / "indexed", raw_features=x), PROBE_OPTIONS)
    assert indexed == ours

    labeldict = {name: np.array(a) for name, a in zip(names, attributes)}

    def split(subset):  # ImageDataset: class by class in the file's order, the class's images in listing order
        images = [i for name in subset for i, label in enumerate(labels) if names[label] == name]
        return ReferenceFeatures(
            torch.from_numpy(x[images]), torch.from_numpy(np.stack([labeldict[names[labels[i]]] for i in images]))
        )

    def f1(y_true, y_pred):
        return sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))

    ref, _ = reference_probe(split(train_classes), split(test_classes), 85, f1, **PROBE_OPTIONS)
    assert 0.2 < np.mean(ref) < 1.0
    assert ours["awa2_macro_f1"] == pytest.approx(np.mean(ref), abs=METRIC_ATOL)
    assert ours["awa2_macro_f1_std"] == pytest.approx(np.std(ref), abs=METRIC_ATOL)


# ---------------------------------------------------------------------------------------------- NeWT


def reference_newt(features, rows, *, seed, runs, n_iter):
    """newt.py: per task (polars unique order does not matter: accuracy is pooled), centre + L2, SVC search."""
    tasks = sorted({r["task"] for r in rows})
    scores = []
    for run in range(runs):
        y_preds, y_trues = [], []
        for task in tasks:
            idx = [i for i, r in enumerate(rows) if r["task"] == task]
            x, y = features[idx], np.array([int(rows[i]["label"]) for i in idx])
            is_train = np.array([rows[i]["split"] == "train" for i in idx])
            x_mean = x[is_train].mean(axis=0, keepdims=True)
            x_train = x[is_train] - x_mean
            x_train = x_train / np.linalg.norm(x_train, ord=2, axis=1, keepdims=True)
            x_test = x[~is_train] - x_mean
            x_test = x_test / np.linalg.norm(x_test, ord=2, axis=1, keepdims=True)
            svc = sklearn.model_selection.RandomizedSearchCV(
                sklearn.pipeline.make_pipeline(
                    sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC(C=1.0, kernel="rbf")
                ),
                {
                    "svc__C": scipy.stats.loguniform(a=1e-3, b=1e1),
                    "svc__kernel": ["rbf", "linear", "sigmoid", "poly"],
                    "svc__gamma": scipy.stats.loguniform(a=1e-4, b=1e-3),
                },
                n_iter=n_iter,
                n_jobs=1,
                random_state=seed + run,
            )
            svc.fit(x_train, y[is_train])
            y_preds.append(svc.predict(x_test))
            y_trues.append(y[~is_train])
        scores.append(np.mean(np.concatenate(y_preds) == np.concatenate(y_trues)))
    return scores


def newt_case():
    x, labels = clusters(16, 6, 12, spread=1.5)
    rows = [
        {"id": str(i), "task": f"task{label // 2}", "label": str(label % 2), "split": "train" if i % 3 else "test"}
        for i, label in enumerate(labels)
    ]
    return normalize(x), rows


def test_newt_matches_reference():
    features, rows = newt_case()
    ours = PROTOCOLS["newt"](TaskFeatures(features, rows), {"n_iter": 6, "runs": 2, "seed": 1, "n_jobs": 1})
    ref = reference_newt(features, rows, seed=1, runs=2, n_iter=6)
    assert 0.5 < np.mean(ref) < 1.0
    assert ours == pytest.approx({"newt_acc": np.mean(ref), "newt_acc_std": np.std(ref)}, abs=METRIC_ATOL)


@pytest.mark.heavy
def test_newt_defaults_match_reference_with_the_published_settings():
    features, rows = newt_case()
    ours = PROTOCOLS["newt"](TaskFeatures(features, rows), {"n_jobs": 1})
    ref = reference_newt(features, rows, seed=0, runs=3, n_iter=100)
    assert ours == pytest.approx({"newt_acc": np.mean(ref), "newt_acc_std": np.std(ref)}, abs=METRIC_ATOL)


# ---------------------------------------------------------------------------------------------- bad input


def test_protocol_table_and_primary_metrics():
    assert sorted(PROTOCOLS) == ["awa2", "fishnet", "herbarium19", "newt", "plantdoc"]
    assert sorted(PRIMARY_METRIC) == sorted(PROTOCOLS)


@pytest.mark.parametrize(
    ("name", "rows", "message"),
    [
        ("fishnet", [{"split": "train"}], "fishnet: annotation column 'FeedingPath' is missing"),
        ("newt", [{"task": "t", "split": "train"}], "newt: annotation column 'label' is missing"),
        ("awa2", [{"filepath": "a.jpg"}], "awa2: annotation column 'class' is missing"),
        ("herbarium19", [{"filepath": "a.jpg"}], "herbarium19: annotation column 'class' is missing"),
        ("plantdoc", [{"class": "a", "filepath": "a.jpg"}], "plantdoc: annotation column 'split' is missing"),
    ],
)
def test_missing_column_is_named(name, rows, message):
    task = TaskFeatures(np.ones((len(rows), 2), np.float32), rows, raw_features=np.ones((len(rows), 2), np.float32))
    with pytest.raises(ValueError, match=message):
        PROTOCOLS[name](task, {})


def test_probes_refuse_bad_input(tmp_path):
    rows = [dict.fromkeys(TRAIT_COLUMNS, "1") | {"split": "train", "FeedingPath": "demersal"}]
    features = np.ones((1, 2), np.float32)
    with pytest.raises(ValueError, match="fishnet: needs TaskFeatures.raw_features"):
        PROTOCOLS["fishnet"](TaskFeatures(features, rows), {})
    with pytest.raises(ValueError, match="FeedingPath can only be pelagic or benthic"):
        PROTOCOLS["fishnet"](TaskFeatures(features, rows, raw_features=features), {})
    with pytest.raises(ValueError, match="fishnet: unknown option\\(s\\) learning_rate"):
        PROTOCOLS["fishnet"](TaskFeatures(features, rows, raw_features=features), {"learning_rate": 1.0})
    with pytest.raises(ValueError, match="awa2: classes.txt is missing in"):
        PROTOCOLS["awa2"](TaskFeatures(features, [{"class": "a"}], tmp_path, raw_features=features), {})
    with pytest.raises(ValueError, match="newt: task t needs both train and test images"):
        PROTOCOLS["newt"](TaskFeatures(features, [{"task": "t", "label": "1", "split": "train"}]), {})
    with pytest.raises(ValueError, match=r"TaskFeatures.features must be \[N, D\] with N = 2 rows"):
        TaskFeatures(features, [{}, {}])
