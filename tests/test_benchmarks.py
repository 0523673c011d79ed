"""The benchmark scripts run, and the figures they print hang together (shortened runs)."""

import fnmatch
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.app.data import sample_images

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(command: list[str], written: Path | None = None) -> dict:
    """Run a benchmark script; its last printed line, a JSON object (also the file ``written``)."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if written is not None:
        assert figures == json.loads(written.read_text())
    return figures


def test_train_step_benchmark_reports_both_networks():
    command = [
        sys.executable,
        "benchmarks/train_step.py",
        "--crop", "16",
        "--batch", "2",
        "--negatives", "1", "2",
        "--repeats", "1",
        "--networks", "reference", "example",
    ]  # fmt: skip
    figures = run_benchmark(command)
    assert set(figures["networks"]) == {"reference", "example"}
    for network in figures["networks"].values():
        step, negative_pass = network["plain_step_s"], network["decoder_nograd_s"]
        assert step > 0 and negative_pass > 0
        assert set(network["negatives"]) == {"1", "2"}
        for m, row in network["negatives"].items():
            # the floor is computed from the two measured times
            assert abs(row["floor"] - (step + int(m) * negative_pass) / step) < 1e-9
            assert abs(row["cpl_over_floor"] * row["floor"] - row["cpl_over_plain"]) < 1e-9
            ratio = row["cpl_over_plain"] / row["executed_floor"]
            assert abs(row["cpl_over_executed_floor"] - ratio) < 1e-9
            assert all(value > 0 for value in row.values())
    assert (
        figures["networks"]["reference"]["parameters"]
        > figures["networks"]["example"]["parameters"]
    )


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_split_keeps_selection_out_of_training_and_apart_from_report():
    quality = _quality_module()
    strip = 16
    train, selection, report = quality.photo_split(strip=strip, report_crop=32)
    full = sample_images(quality.TRAIN_PHOTOS)
    assert not set(quality.TRAIN_PHOTOS) & set(quality.REPORT_PHOTOS)
    assert set(report) == set(quality.REPORT_PHOTOS)
    assert not set(selection) & set(report)
    for image, (name, photo) in zip(train, full.items(), strict=True):
        width = photo.shape[-1]
        assert torch.equal(image, photo[..., : width - strip])
        crops = [crop for key, crop in selection.items() if key.startswith(name)]
        assert len(crops) == 2
        # each selection crop is a window of the held-out strip, right of every training pixel
        # (3, H - strip + 1, strip, strip): every strip x strip window of the strip
        windows = photo[..., width - strip :].unfold(1, strip, 1)
        for crop in crops:
            found = (windows == crop.permute(0, 2, 1)[:, None]).flatten(2).all(2).all(0)
            assert found.any()
    assert all(image.shape[-2:] == (32, 32) for image in report.values())


def test_quality_benchmark_summary_follows_from_the_per_image_scores(tmp_path):
    out = tmp_path / "quality.json"
    command = [
        sys.executable, "benchmarks/quality.py",
        "--steps", "2", "--crop", "16", "--strip", "16", "--report-crop", "16", "--batch", "2",
        "--seeds", "0", "1", "--threads", "1", "--variants", "dense", "cpl",
        "--cpl", "default", "default+labels", "--fallback", "default+labels",
        "--out", str(tmp_path / "runs"), "--json", str(out),
    ]  # fmt: skip
    figures = run_benchmark(command, out)
    split, degradations = figures["split"], figures["degradations"]
    assert split["selection"] and split["report"]
    assert not set(split["selection"]) & set(split["report"])
    assert not any(name.split()[0] in split["report"] for name in split["selection"])
    runs = figures["runs"]
    assert set(runs) == {"dense", "cpl", "cpl default+labels"}
    seeds = ["0", "1"]

    def per_seed(variant, set_name, seed):
        scores = runs[variant][seed][set_name]["psnr"]
        assert set(scores) == set(degradations)
        assert all(len(v) == len(split[set_name]) for v in scores.values())
        means = {deg: statistics.fmean(scores[deg]) for deg in degradations}
        return {**means, "average": statistics.fmean(means.values())}

    for set_name in ("selection", "report"):
        summary = figures[set_name]
        for variant in runs:
            for column in [*degradations, "average"]:
                values = [per_seed(variant, set_name, s)[column] for s in seeds]
                cell = summary[variant]["psnr"][column]
                assert cell["per_seed"] == pytest.approx(values)
                assert cell["mean"] == pytest.approx(statistics.fmean(values))
                assert cell["std"] == pytest.approx(statistics.stdev(values))
            if variant == "dense":
                assert "vs_dense" not in summary[variant]
                continue
            for column in [*degradations, "average"]:
                diffs = []
                for seed in seeds:
                    a = runs[variant][seed][set_name]["psnr"]
                    b = runs["dense"][seed][set_name]["psnr"]
                    columns = degradations if column == "average" else [column]
                    per_image = [[x - y for x, y in zip(a[c], b[c], strict=True)] for c in columns]
                    diffs += [statistics.fmean(d) for d in zip(*per_image, strict=True)]
                cell = summary[variant]["vs_dense"][column]
                assert cell["pairs"] == len(seeds) * len(split[set_name]) == len(diffs)
                assert cell["mean"] == pytest.approx(statistics.fmean(diffs))
                assert cell["std"] == pytest.approx(statistics.stdev(diffs))
                tie = abs(cell["mean"]) <= cell["std"]
                assert cell["mark"] == ("tie" if tie else "gain" if cell["mean"] > 0 else "loss")

    choice = figures["choice"]
    candidates = ["cpl", "cpl default+labels"]
    assert choice["candidates"] == candidates and choice["fallback"] == "cpl default+labels"
    selection = figures["selection"]
    assert choice["best"] == max(candidates, key=lambda v: selection[v]["psnr"]["average"]["mean"])
    if choice["best"] == choice["fallback"]:
        assert choice["chosen"] == choice["fallback"]
    else:
        beats = choice["best_vs_fallback"]["mark"] == "gain"
        assert choice["chosen"] == (choice["best"] if beats else choice["fallback"])


def test_export_latency_benchmark_agrees_and_its_ratios_are_quotients():
    pytest.importorskip("onnxruntime")
    command = [
        sys.executable,
        "benchmarks/export_latency.py",
        "--networks", "example",
        "--sizes", "16x24", "10x14",
        "--repeats", "1",
        "--warmup", "0",
    ]  # fmt: skip
    figures = run_benchmark(command)
    assert figures["threads"] == 1 and figures["batch"] == 1
    network = figures["networks"]["example"]
    assert network["prompt_layers"] == 2 and network["export_s"] > 0
    assert set(network["sizes"]) == {"16x24", "10x14"}
    for row in network["sizes"].values():
        assert row["same_experts"] is True
        assert row["program_max_abs_diff"] <= 1e-5 and row["onnx_max_abs_diff"] <= 1e-4
        assert all(row[f"{name}_s"] > 0 for name in ("eager", "program", "onnx"))
        assert row["program_over_eager"] == pytest.approx(row["program_s"] / row["eager_s"])
        assert row["onnx_over_eager"] == pytest.approx(row["onnx_s"] / row["eager_s"])


def test_the_gpu_quality_script_runs_its_plan_on_a_cpu_budget(tmp_path):
    env = {
        **os.environ, "DEVICE": "cpu", "PRECISION": "fp32", "PRESET": "tiny", "STEPS": "2",
        "CROP": "16", "BATCH": "2", "OUT": str(tmp_path), "PYTHON": sys.executable,
    }  # fmt: skip
    command = ["bash", "benchmarks/gpu_quality.sh", "--strip", "16", "--report-crop", "16",
               "--threads", "1"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "quality.json").read_text())
    assert set(figures["runs"]) == {"dense", "cpl"}
    assert all(set(runs) == {"0", "1"} for runs in figures["runs"].values())
    assert figures["machine"]["device"] == "cpu"  # the card's name on a GPU
    assert figures["args"]["variants"] == ["dense", "cpl"] and figures["args"]["steps"] == 2


def test_prompt_settings_summary_and_choice_follow_from_the_runs(tmp_path):
    out = tmp_path / "settings.json"
    command = [
        sys.executable, "benchmarks/prompt_settings.py", "--quick",
        "--networks", "nafnet", "resnet_bn", "--settings", "l1", "dense", "cpl", "routing",
        "--seeds", "0", "1", "--work-dir", str(tmp_path / "runs"), "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures == json.loads(out.read_text()) and "partial" not in figures
    runs, seeds = figures["runs"], ["0", "1"]
    assert set(runs) == {"l1", "dense", "cpl", "routing"}
    names = ["noise", "rain", "haze", "low_light"]
    for setting, by_network in runs.items():
        assert set(by_network) == {"nafnet", "resnet_bn"}
        for network, by_mix in by_network.items():
            by_seed = by_mix["4way"]
            assert set(by_seed) == set(seeds)
            for run in by_seed.values():
                assert run["steps"] == 3
                for stream in ("selection", "report"):
                    effect = run[stream]
                    assert effect["names"] == names
                    if setting == "dense":  # no negatives: own PSNR alone
                        assert set(effect) == {"names", "own", "average"}
                        continue
                    for name in names:
                        own, swap = effect["own"][name], effect["swap"][name]
                        assert effect["cost"][name] == pytest.approx(own - effect["negative"][name])
                        assert effect["swap_cost"][name] == pytest.approx(own - swap)
                    assert list(effect["specialisation"]) == [
                        f"{block}.prompt_stage.prompt" for block in
                        (("decoders.0", "decoders.1") if network == "nafnet"
                         else ("decoder.0", "decoder.1"))
                    ]  # fmt: skip
            for stream in ("selection", "report"):
                entry = figures[stream][setting][f"{network} 4way"]
                own = [by_seed[s][stream]["average"]["own"] for s in seeds]
                l1 = [runs["l1"][network]["4way"][s][stream]["average"]["own"] for s in seeds]
                assert entry["own"]["mean"] == pytest.approx(statistics.fmean(own))
                assert entry["own"]["std"] == pytest.approx(statistics.stdev(own))
                diff = [a - b for a, b in zip(own, l1, strict=True)]
                assert entry["own_vs_l1"]["mean"] == pytest.approx(statistics.fmean(diff))
                if setting == "dense":
                    assert "targets" not in entry
                    continue
                swap = [by_seed[s][stream]["average"]["swap_cost"] for s in seeds]
                assert entry["swap_cost"]["mean"] == pytest.approx(statistics.fmean(swap))
                layers = [by_seed[s][stream]["specialisation"] for s in seeds]
                nmi = [statistics.fmean(v["nmi"] for v in found.values()) for found in layers]
                assert entry["nmi"]["mean"] == pytest.approx(statistics.fmean(nmi), nan_ok=True)
                last = [list(found.values())[-1]["separated"] for found in layers]
                assert entry["separated"] == last  # the stage nearest the output
                met = entry["targets"]
                assert met["separated"] == all(last)
                assert met["swap>=1dB"] == (entry["swap_cost"]["mean"] >= 1.0)
                keeps = entry["own_vs_l1"]["mean"] >= -entry["own_vs_l1"]["std"]
                assert met["own_kept"] == keeps
                assert entry["targets_met"] == sum(met.values())
    # the controls are never chosen; the chosen setting meets the most targets on selection
    choice = figures["choice"]
    assert set(choice["scores"]) == {"cpl", "routing"}
    best = max(v["targets_met"] for v in choice["scores"].values())
    assert choice["scores"][choice["chosen"]]["targets_met"] == best
    assert "### report images" in done.stdout and "- chosen: " in done.stdout
    # a second sitting finds every run scored and trains nothing
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count(": scored") == 16 and "step 1/3" not in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["runs"] == runs
    # results of two files summarised together, without training
    merged = subprocess.run(
        [sys.executable, "benchmarks/prompt_settings.py", "--from-json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout.strip().splitlines()[-1])["runs"] == runs


def test_prompt_settings_runs_carry_on_exactly_from_their_checkpoints(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import prompt_settings as sweep
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    torch.set_num_threads(1)
    key = ("routing", "nafnet", "4way", 0)
    options = dict(steps=4, crop=16, batch=4, lr=1e-3, save_every=2)
    whole, record = sweep.train_run(key, tmp_path / "whole", **options)
    assert record["step"] == 4
    calls = []
    make_batch = sweep.make_batch

    def stop_at_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return make_batch(*args)

    monkeypatch.setattr(sweep, "make_batch", stop_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        sweep.train_run(key, tmp_path / "split", **options)
    monkeypatch.setattr(sweep, "make_batch", make_batch)
    carried, again = sweep.train_run(key, tmp_path / "split", **options)  # from step 2
    assert again["step"] == 4
    for (name, a), b in zip(whole.state_dict().items(), carried.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_flops_benchmark_parts_add_up_and_a_convolution_counts_its_closed_form():
    batch, size, padded = 2, 20, 24  # forward pads 20 to the next multiple of 8
    command = [
        sys.executable,
        "benchmarks/flops.py",
        "--preset", "tiny",
        "--size", str(size),
        "--batch", str(batch),
    ]  # fmt: skip
    figures = run_benchmark(command)
    forward, encode, decode = (figures[f"{p}_flops"] for p in ("forward", "encode", "decode"))
    # the two halves counted alone make the whole pass, and so do the top-level modules
    assert encode > 0 and decode > 0
    assert encode + decode == forward
    assert sum(figures["modules"].values()) == forward
    assert figures["encode_share"] == pytest.approx(encode / forward)
    assert figures["decode_share"] == pytest.approx(decode / forward)
    # a full-resolution convolution: 2 * B * H * W * C_out * (C_in / groups) * kh * kw
    model = SparsePromptIR("tiny", device="meta")
    for name in ("patch_embed", "output"):
        conv = getattr(model, name)
        assert isinstance(conv, torch.nn.Conv2d) and conv.stride == (1, 1)
        expected = 2 * batch * padded * padded * conv.weight.shape.numel()
        assert figures["modules"][name] == expected


def test_every_result_file_a_page_names_is_committed_and_every_committed_one_is_named():
    """The pages' figures come from result files in the repository, and none is left unread."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    patterns = {
        name
        for page in pages
        for name in re.findall(r"benchmarks/results/([\w.*-]+\.json)", page.read_text())
    }
    committed = {p.name for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert patterns, "no page names a result file"
    unmatched = sorted(p for p in patterns if not fnmatch.filter(committed, p))
    assert not unmatched, f"named on a page but not committed: {unmatched}"
    unnamed = sorted(c for c in committed if not any(fnmatch.fnmatch(c, p) for p in patterns))
    assert not unnamed, f"committed but named on no page: {unnamed}"
    for name in committed:
        json.loads((ROOT / "benchmarks" / "results" / name).read_text())


def test_tiled_routing_figures_hang_together(tmp_path):
    out = tmp_path / "tiled.json"
    command = [
        sys.executable, "benchmarks/tiled_routing.py", "--quick",
        "--work-dir", str(tmp_path / "run"), "--json", str(out),
    ]  # fmt: skip
    figures = run_benchmark(command, out)
    assert (tmp_path / "run" / "last.pt").is_file()  # a run carried on by a later sitting
    table = figures["per_degradation"]
    assert list(table) == ["noise_15", "noise_25", "noise_50", "rain", "haze"]
    for row in table.values():
        # 96 x 128 photos, 48-pixel tiles overlapping by 16: rows start at 0, 32, 48 and
        # columns at 0, 32, 64, 80
        assert row["tiles"] == 12
        # shares of 2 photos x 12 tiles x 3 layers, and of 2 photos x 3 layers
        assert row["tiles_off_tile"] * 72 == pytest.approx(round(row["tiles_off_tile"] * 72))
        assert row["tiles_off_image"] * 6 == pytest.approx(round(row["tiles_off_image"] * 6))
        assert 0 <= row["tiles_off_tile"] <= 1 and 0 <= row["tiles_off_image"] <= 1
        assert all(v == v and abs(v) != float("inf") for v in row.values())  # no NaN, no inf
    average = figures["average"]
    assert average["psnr_image"] == pytest.approx(
        statistics.fmean(row["psnr_image"] for row in table.values())
    )


def test_restore_benchmark_times_both_routings(tmp_path):
    out = tmp_path / "restore.json"
    command = [
        sys.executable, "benchmarks/restore.py", "--megapixels", "0.01", "--tiles", "none", "48",
        "--overlap", "16", "--routing", "image", "tile", "--repeats", "1", "--json", str(out),
    ]  # fmt: skip
    figures = run_benchmark(command, out)
    entry = figures["sizes"]["0.01"]
    ways = {"none", "48 x1 image", "48 x1 tile"}
    assert set(entry["memory_gib"]) == ways and set(entry["seconds_per_megapixel"]) == ways
    assert all(t > 0 for t in entry["seconds_per_megapixel"].values())


def test_add_degradation_benchmark_runs_and_keeps_the_old_degradations(tmp_path):
    command = [sys.executable, "benchmarks/add_degradation.py", "--quick", "--seeds", "0",
               "--work-dir", str(tmp_path), "--json", str(tmp_path / "figures.json")]  # fmt: skip
    figures = run_benchmark(command, tmp_path / "figures.json")
    table = figures["per_degradation"]
    assert list(table)[-1] == "low_light" and len(table) == 6
    runs = figures["runs"]
    # the grown run trains the new rows alone: one expert's bank entries and router rows
    assert runs["grown"]["trained_parameters"] < runs["tuned"]["trained_parameters"] / 50
    for name, row in table.items():
        assert 0 <= row["new_expert_share_max"] < 1, name
        assert set(row) >= {"base", "grown", "tuned", "joint", "grown_minus_base"}


def test_gated_growth_benchmark_leaves_every_image_the_gate_keeps_to_the_base_model(tmp_path):
    command = [sys.executable, "benchmarks/gated_growth.py", "--quick", "--seeds", "0",
               "--work-dir", str(tmp_path), "--json", str(tmp_path / "figures.json")]  # fmt: skip
    figures = run_benchmark(command, tmp_path / "figures.json")
    seed = figures["per_seed"][0]
    names = seed["names"]
    assert names[-1] == "low_light" and len(names) == 6
    psnr = seed["psnr"]
    for name in names[:-1]:  # old: the perfect gate runs the base model itself, bit for bit
        assert psnr["perfect_gate"][name] == psnr["base"][name], name
        right, of = seed["gate_right"][name]
        assert 0 <= right <= of == 2  # one draw of the two photos
        if right == of:  # the gate kept every image of it: the base model's own figure
            assert psnr["gated"][name] == psnr["base"][name], name
    gated = figures["gated"]  # the copy trains whole
    assert gated["steps"] == 3 and gated["trained_parameters"] == figures["parameters"]


def test_gate_choices_benchmark_counts_every_held_out_image_once(tmp_path):
    command = [sys.executable, "benchmarks/gate_choices.py", "--quick",
               "--json", str(tmp_path / "figures.json")]  # fmt: skip
    figures = run_benchmark(command, tmp_path / "figures.json")
    ((case, found),) = figures["cases"].items()
    assert case == "low_light" and len(found["right"]) == 6
    for name, (right, count) in found["right"].items():
        assert 0 <= right <= count == 2, name  # one draw of the two photos, one seed


def test_composite_routing_benchmark_runs_and_places_every_composite_pick(tmp_path):
    command = [sys.executable, "benchmarks/composite_routing.py", "--quick",
               "--work-dir", str(tmp_path), "--json", str(tmp_path / "figures.json")]  # fmt: skip
    figures = run_benchmark(command, tmp_path / "figures.json")
    assert set(figures["psnr"]) == {"parts_top1", "parts_top2", "cdd11_top1"}
    assert all(len(table) == 11 for table in figures["psnr"].values())
    for run, table in figures["expert_origin"].items():
        assert len(table) == 7, run  # the seven composites
        for kind, shares in table.items():
            assert sum(shares.values()) == pytest.approx(1.0), (run, kind)
            parts = {f"part:{p}" for p in kind.split("+")} | {"other"}
            assert set(shares) <= parts, (run, kind)
    assert set(figures["top2_both_from_parts"]) == {"parts_top2"}


def test_add_degradation_network_benchmark_runs_and_trains_the_new_rows_alone(tmp_path):
    command = [sys.executable, "benchmarks/add_degradation_network.py", "--quick", "--seeds", "0",
               "--work-dir", str(tmp_path), "--json", str(tmp_path / "figures.json")]  # fmt: skip
    figures = run_benchmark(command, tmp_path / "figures.json")
    assert list(figures["per_degradation"]) == ["noise", "rain", "haze", "low_light"]
    trained = figures["trained_parameters"]
    assert 0 < trained["grown"] < trained["tuned"] / 50
    for row in figures["per_degradation"].values():
        assert 0 <= row["grown_routed_to_new"] <= 1 and 0 <= row["grown_fast_routed_to_new"] <= 1
        assert set(row) >= {"base", "grown", "grown_fast", "tuned", "joint"}


def test_the_mutation_run_left_no_gap_and_its_counts_add_up():
    """Every mutant that survived the tests is explained as equivalent, and no explanation is
    stale: the script's list of equivalent mutants is exactly the committed run's survivors."""
    figures = json.loads((ROOT / "benchmarks" / "results" / "mutation_core.json").read_text())
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    survivors = figures["survivors"]
    assert figures["gaps"] == 0 and all(s["equivalent"] for s in survivors)
    assert set(script.EQUIVALENT) == {s["mutant"] for s in survivors}
    per_function = figures["functions"].values()
    for status, count in figures["total"].items():
        assert sum(counts.get(status, 0) for counts in per_function) == count
    assert figures["total"]["survived"] == len(survivors)
    assert list(figures["functions"]) == [
        f"{module}.{name}" for module, names in script.FUNCTIONS.items() for name in names
    ]
