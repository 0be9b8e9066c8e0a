"""BioCLIP 2's Herbarium19 (semi-supervised k-means) and PlantDoc (1-shot SimpleShot) protocols against references
written in the test from Imageomics/bioclip-2 src/evaluation/{herbarium19,faster_mix_k_means_pytorch,plantdoc,
simpleshot}.py, on synthetic features laid out in real folders (torchvision ImageFolder's listing is re-done
with os.walk here, since the package must not need torchvision)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import sklearn.neighbors
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.utils import check_random_state
from support.protocol_features import METRIC_ATOL, clusters, normalize

from bioclip_hf.evaluation.protocols import PROTOCOLS, TaskFeatures
from bioclip_hf.evaluation.protocols import semisup_kmeans as kmeans_module
from bioclip_hf.evaluation.protocols.herbarium19 import class_splits
from bioclip_hf.evaluation.protocols.semisup_kmeans import semi_supervised_kmeans


def image_folder(root):
    """torchvision ImageFolder's (path relative to root's parent, class index) samples."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    samples = []
    for index, name in enumerate(classes):
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            samples.extend((os.path.relpath(os.path.join(folder, f), root.parent), index) for f in sorted(files))
    return samples


def lay_out(root, split, labels, class_names, rng):
    """Empty image files in split/<class>/ (some in a nested folder); rows in a shuffled order."""
    rows = []
    for i, label in enumerate(labels):
        sub = "nested/" if i % 7 == 0 else ""
        path = f"{split}/{class_names[label]}/{sub}img{rng.integers(10**6)}_{i}.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
        rows.append({"filepath": path, "class": class_names[label], "split": "train" if split != "test" else "test"})
    return rows


# ------------------------------------------------------------------------------- faster_mix_k_means_pytorch


def reference_pairwise_distance(data1, data2, batch_size=None):
    a, b = data1.unsqueeze(dim=1), data2.unsqueeze(dim=0)
    if batch_size is None:
        return ((a - b) ** 2).sum(dim=-1)
    dis = torch.zeros(data1.shape[0], data2.shape[0])
    for i in range(0, data1.shape[0], batch_size):
        dis[i : i + batch_size] = ((a[i : i + batch_size] - b) ** 2).sum(dim=-1)
    return dis


def reference_fit_mix(u_feats, l_feats, l_targets, k, seed, batch_size=1024, tolerance=1e-4, max_iterations=10):
    """K_Means(k, tolerance, max_iterations, init='k-means++', n_init=1, random_state=seed, pairwise_batch_size)
    .fit_mix(u_feats, l_feats, l_targets).labels_, straight-line."""
    random_state = check_random_state(seed)
    l_classes = torch.unique(l_targets)
    support_idxs = [l_targets.eq(c).nonzero().squeeze(1) for c in l_classes]
    l_centers = torch.stack([l_feats[idx].mean(0) for idx in support_idxs])
    cat_feats = torch.cat((l_feats, u_feats))
    labels = -torch.ones(len(cat_feats)).long()
    cid2ncid = {cid: ncid for ncid, cid in enumerate(l_classes.numpy())}
    for i in range(len(l_targets)):
        labels[i] = cid2ncid[int(l_targets[i])]
    # kpp: recompute the distances to every centre for each new one
    centers = l_centers.view(-1, u_feats.shape[1])
    while centers.shape[0] < k:
        d2, _ = torch.min(reference_pairwise_distance(u_feats, centers, batch_size).view(-1, centers.shape[0]), dim=1)
        cum_prob = torch.cumsum(d2 / d2.sum(), dim=0)
        r = random_state.rand()
        if len((cum_prob >= r).nonzero()) != 0:
            ind = (cum_prob >= r).nonzero()[0][0]
        centers = torch.cat((centers, u_feats[ind].view(1, -1)), dim=0)
    l_num = len(l_targets)
    best_labels, best_inertia = None, None
    for _ in range(max_iterations):
        centers_old = centers.clone()
        u_mindist, u_labels = torch.min(reference_pairwise_distance(u_feats, centers, batch_size), dim=1)
        l_mindist = torch.sum((l_feats - centers[labels[:l_num]]) ** 2, dim=1)
        inertia = u_mindist.sum() + l_mindist.sum()
        labels[l_num:] = u_labels
        for idx in range(k):
            selected = torch.index_select(cat_feats, 0, torch.nonzero(labels == idx).squeeze())
            centers[idx] = selected.mean(dim=0)
        if best_inertia is None or inertia < best_inertia:
            best_labels, best_inertia = labels.clone(), inertia
        center_shift = torch.sum(torch.sqrt(torch.sum((centers - centers_old) ** 2, dim=1)))
        if center_shift**2 < tolerance:
            break
    return best_labels


# k = 53 > 3 labelled classes + 48 unlabelled points: k-means++ runs out of points and repeats the last one (its
# fallback), the repeated centre's cluster stays empty and its centre turns NaN, as in the original.
@pytest.mark.parametrize("k", [6, 11, 53])
def test_semi_supervised_kmeans_matches_reference(monkeypatch, k):
    x, labels = clusters(12, 6, 8, spread=0.8)
    features = torch.from_numpy(normalize(x))
    labelled = torch.from_numpy(np.isin(labels, [1, 4, 5]) & (np.arange(len(labels)) % 3 != 0))
    l_targets = torch.from_numpy(labels)[labelled]
    monkeypatch.setattr(kmeans_module, "_BLOCK_BYTES", 5 * k * 8 * 4)  # 5 rows per distance block
    # Larger tolerances make the stop test (shift ** 2 < tolerance) end the loop before convergence.
    for seed, tolerance in [(0, 1e-4), (1, 1e-4), (2, 1e-4), (0, 0.3), (1, 0.1)]:
        unlabelled, labelled_feats = features[~labelled], features[labelled]
        ours = semi_supervised_kmeans(unlabelled, labelled_feats, l_targets, k, random_state=seed, tolerance=tolerance)
        ref = reference_fit_mix(unlabelled, labelled_feats, l_targets, k, seed, batch_size=7, tolerance=tolerance)
        assert torch.equal(ours, ref)


def test_nearest_centers_equal_the_full_computation_with_ties():
    from bioclip_hf.evaluation.protocols.semisup_kmeans import nearest_centers, pairwise_sq_distances

    generator = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(300, 64, generator=generator), dim=-1)
    centers = torch.cat([x[:20], x[:5], x[20:25] + 1e-7])  # exact duplicates (first index wins) and near-ties
    values, indices = nearest_centers(x, centers)
    full_values, full_indices = torch.min(pairwise_sq_distances(x, centers), dim=1)
    assert torch.equal(indices, full_indices) and torch.equal(values, full_values)
    centers[3] = float("nan")  # an emptied cluster: the original's NaN-propagating path
    values, indices = nearest_centers(x, centers)
    full_values, full_indices = torch.min(pairwise_sq_distances(x, centers), dim=1)
    assert torch.equal(indices, full_indices) and torch.isnan(values).all()
    torch.testing.assert_close(values, full_values, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------------------- herbarium19.py


def reference_cluster_acc(y_true, y_pred):
    d = max(y_pred.max(), y_true.max()) + 1
    w = np.zeros((d, d), dtype=int)
    for i in range(len(y_pred)):
        w[y_pred[i], y_true[i]] += 1
    ind = np.vstack(linear_sum_assignment(w.max() - w)).T
    return np.array([ind[i][1] for i in y_pred]) == y_true


def reference_herbarium19(samples, feature_of, train_classes, unlabeled_classes, seed, runs):
    """get_herbarium_datasets + MergedDataset + the runs loop of herbarium19.py."""
    targets = [t for _, t in samples]
    uq_idxs = np.arange(len(samples))
    cls_idxs = [i for i, t in enumerate(targets) if t in train_classes]  # subsample_classes
    np.random.seed(0)  # subsample_instances
    subsample = np.random.choice(range(len(cls_idxs)), replace=False, size=(int(0.8 * len(cls_idxs)),))
    mask = np.zeros(len(cls_idxs), dtype=bool)
    mask[subsample] = True
    labelled_uq = uq_idxs[cls_idxs][mask]
    unlabelled_mask = np.zeros(len(samples), dtype=bool)
    unlabelled_mask[np.array(list(set(uq_idxs) - set(labelled_uq)))] = True
    unlabelled_uq = uq_idxs[unlabelled_mask]
    l_xform = {k: i for i, k in enumerate(train_classes)}
    xform = {k: i for i, k in enumerate(list(train_classes) + list(set(targets) - set(train_classes)))}
    merged = [(i, l_xform[targets[i]], True) for i in labelled_uq] + [
        (i, xform[targets[i]], False) for i in unlabelled_uq
    ]
    features = torch.stack([feature_of[samples[i][0]] for i, _, _ in merged])
    all_labels = torch.tensor([label for _, label, _ in merged])
    train_masks = torch.tensor([is_l for _, _, is_l in merged])
    masks_cls = torch.tensor([label in range(len(train_classes)) for _, label, _ in merged])
    u_labels = all_labels[~train_masks].long().numpy()
    scores = []
    for run in range(runs):
        k = len(train_classes) + len(unlabeled_classes)
        preds = reference_fit_mix(features[~train_masks], features[train_masks], all_labels[train_masks], k, seed + run)
        preds = preds[len(labelled_uq) :].numpy()
        mask_cls = masks_cls[~train_masks].numpy()
        accs = np.zeros_like(u_labels)
        accs[mask_cls] = reference_cluster_acc(u_labels[mask_cls], preds[mask_cls])
        accs[~mask_cls] = reference_cluster_acc(u_labels[~mask_cls], preds[~mask_cls])
        scores.append(accs.mean())
    return scores


def test_herbarium19_matches_reference(tmp_path):
    # 12 classes named 0..11: ImageFolder sorts them as strings ("10" < "2"); Old classes in a non-sorted order.
    x, labels = clusters(10, 12, 8, spread=0.6)
    labels[:5] = 3  # uneven class sizes
    features = normalize(x)
    rows = lay_out(tmp_path, "small-train", labels, [str(c) for c in range(12)], np.random.default_rng(5))
    splits = {"Old": [7, 0, 10, 3, 5, 1], "New": [2, 4, 6, 8, 9, 11]}
    ours = PROTOCOLS["herbarium19"](TaskFeatures(features, rows), {"class_splits": splits, "seed": 2})
    feature_of = {row["filepath"]: torch.from_numpy(features[i]) for i, row in enumerate(rows)}
    ref = reference_herbarium19(image_folder(tmp_path / "small-train"), feature_of, splits["Old"], splits["New"], 2, 3)
    assert 0.3 < np.mean(ref) < 1.0
    assert ours == pytest.approx({"herbarium19_acc": np.mean(ref), "herbarium19_acc_std": np.std(ref)}, abs=METRIC_ATOL)


def test_herbarium19_ships_the_original_class_splits():
    splits = class_splits()
    assert len(splits["Old"]) == 341 and len(splits["New"]) == 342
    assert sorted(splits["Old"] + splits["New"]) == list(range(683))
    assert splits["Old"][:3] == [113, 378, 303]  # the pickle's order (it numbers the labelled classes)


# ------------------------------------------------------------------------------- plantdoc.py + simpleshot.py


def reference_plantdoc(root, feature_of, seed, n_repeats, batch_size=256):
    """plantdoc.py on the CPU: shuffled extraction loaders after random_seed(seed), choose_k_per_class, simpleshot."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    def get_features(split):
        samples = image_folder(root / split)
        loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, shuffle=True)
        x, y = [], []
        for paths, labels in loader:
            x.extend(feature_of[p] for p in paths)
            y.extend(labels)
        return torch.stack(x), torch.tensor(y)

    x_train, y_train = get_features("train")
    x_test, y_test = get_features("test")

    def l2_normalize(features):
        return features / np.linalg.norm(features, ord=2, axis=1, keepdims=True)

    all_scores = []
    for r in range(n_repeats):
        np.random.seed(seed + r)
        chosen = np.array([], dtype=int)
        for cls in np.unique(y_train):
            cls_indices = np.where(y_train == cls)[0]
            np.random.shuffle(cls_indices)
            chosen = np.concatenate((chosen, cls_indices[:1]))
        np.random.shuffle(chosen)
        i = torch.from_numpy(chosen)
        xs, ys = x_train[i], y_train[i]
        x_mean = xs.mean(axis=0, keepdims=True)
        xs, xt = l2_normalize(xs - x_mean), l2_normalize(x_test - x_mean)
        clf = sklearn.neighbors.NearestCentroid()
        clf.fit(xs, ys)
        centroids = torch.from_numpy(clf.centroids_)
        scores = []
        for start in range(0, len(xt), batch_size):
            distances = torch.linalg.vector_norm(xt[start : start + batch_size][:, None] - centroids, axis=2)
            scores.append((torch.argmin(distances, dim=1) == y_test[start : start + batch_size]).type(torch.float32))
        all_scores.append(torch.mean(torch.cat(scores, axis=0)))
    return np.array(all_scores)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's NearestCentroid: spread of 1 image per class
def test_plantdoc_matches_reference(tmp_path):
    x, labels = clusters(14, 9, 8, spread=1.0)
    features = normalize(x)
    names = [f"Leaf {c}" for c in "ABCDEFGHI"]
    is_test = np.arange(len(labels)) % 3 == 0
    rng = np.random.default_rng(6)
    rows = lay_out(tmp_path, "train", labels[~is_test], names, rng) + lay_out(
        tmp_path, "test", labels[is_test], names, rng
    )
    ordered = np.concatenate([features[~is_test], features[is_test]])
    ours = PROTOCOLS["plantdoc"](TaskFeatures(ordered, rows), {"seed": 4})
    feature_of = {row["filepath"]: torch.from_numpy(ordered[i]) for i, row in enumerate(rows)}
    ref = reference_plantdoc(tmp_path, feature_of, seed=4, n_repeats=5)
    assert 0.3 < ref.mean() < 1.0
    assert ours == pytest.approx(
        {"plantdoc_1_shot_acc": ref.mean(), "plantdoc_1_shot_acc_std": ref.std()}, abs=METRIC_ATOL
    )


def test_gcd_protocols_refuse_bad_input():
    features = np.ones((2, 2), np.float32)
    rows = [
        {"class": "a", "filepath": "a/1.jpg", "split": "train"},
        {"class": "a", "filepath": "a/2.jpg", "split": "train"},
    ]
    with pytest.raises(ValueError, match="plantdoc: no test images"):
        PROTOCOLS["plantdoc"](TaskFeatures(features, rows), {})
    with pytest.raises(ValueError, match="herbarium19: needs labelled and unlabelled images, got 0"):
        PROTOCOLS["herbarium19"](TaskFeatures(features, rows), {"class_splits": {"Old": [5], "New": [0]}})
    with pytest.raises(ValueError, match="herbarium19: unknown option"):
        PROTOCOLS["herbarium19"](TaskFeatures(features, rows), {"k": 3})
