"""Model folders: save_pretrained, export_folder, from_pretrained (local, from the Hub's cache)."""

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from contrastive_prompts import InputError, InputTypeError, SparsePromptIR
from contrastive_prompts.app.checkpoints import (
    UNUSED_PROMPTIR_KEYS,
    convert_promptir_state_dict,
    load_checkpoint_model,
    model_config_of,
    read_checkpoint,
)
from contrastive_prompts.app.cli import main
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.data import DegradedCopies, write_image
from contrastive_prompts.app.effect import PromptEffect
from contrastive_prompts.app.files import CheckpointError
from contrastive_prompts.app.pretrained import (
    CARD_FILE,
    CITATION,
    CONFIG_FILE,
    MAX_CONFIG_BYTES,
    WEIGHTS_FILE,
    ModelCard,
    export_folder,
    from_pretrained,
    save_pretrained,
)
from contrastive_prompts.app.train import Trainer

from .leftovers import temporaries
from .test_hostile_files import HOSTILE_CONFIGS

HELD = "already holds config.json, model.safetensors, README.md"

hub_constants = pytest.importorskip("huggingface_hub.constants")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-step ``tiny`` run validated on two held-out images: its checkpoint."""
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=2, batch_size=1, crop=32, val_crop=16, num_negatives=1,
                         device="cpu", out_dir=str(folder / "run"))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    held_out = [torch.rand(3, 16, 16, generator=g) for _ in range(2)]
    Trainer(config, val_data=DegradedCopies(held_out, "3task")).fit()
    return folder / "run" / "last.pt"


def _equal_models(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"top_k": 2, "num_prompts": 3}, {"use_prompts": False}, {"prompt_sizes": (5, 3, 2)}],
    ids=["tiny", "top2-of-3", "no-prompts", "odd-prompt-sizes"],
)
def test_a_saved_folder_loads_the_same_model(tmp_path, overrides):
    torch.manual_seed(0)
    model = SparsePromptIR("tiny", **overrides)
    folder = save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, CONFIG_FILE, WEIGHTS_FILE]
    loaded = from_pretrained(folder)
    assert loaded.config == model.config and not loaded.training
    _equal_models(model, loaded)
    # every reader of weights takes the folder, and its safetensors file alone
    _equal_models(model, load_checkpoint_model(folder))
    _equal_models(model, load_checkpoint_model(folder / WEIGHTS_FILE))
    assert temporaries(folder) == []


def test_export_folder_writes_the_runs_card(run, tmp_path):
    folder = export_folder(run, tmp_path / "cpl-tiny", repo_id="someone/cpl-tiny")
    state = read_checkpoint(run)
    _equal_models(load_checkpoint_model(run), from_pretrained(folder))
    info = json.loads((folder / CONFIG_FILE).read_text())
    assert info["label_names"] == state["label_names"] and info["step"] == 2
    card = (folder / CARD_FILE).read_text()
    last = state["validations"][-1]
    # the held-out table holds the run's own figures, per degradation
    for name in state["label_names"]:
        row = f"| {name} | {last['count'][name]} | {last['psnr'][name]:.2f} | "
        assert row + f"{last['ssim'][name]:.4f} |" in card
    effect = PromptEffect.from_dict(last["effect"])
    assert effect.table() in card and "specialisation (NMI)" in card
    assert card.startswith("---\nlicense: mit\n") and "pipeline_tag: image-to-image" in card
    assert 'from_pretrained("someone/cpl-tiny")' in card and "\n# someone/cpl-tiny\n" in card
    assert "hf download someone/cpl-tiny --local-dir cpl-tiny\ncontrastive-prompts restore " in card
    assert "2 steps; the folder holds the EMA weights of the last." in card
    assert CITATION in card and "| preset | tiny |" in card and "| mix | 3task |" in card
    # the raw weights when asked
    raw = export_folder(run, tmp_path / "raw", ema=False)
    _equal_models(load_checkpoint_model(run, ema=False), from_pretrained(raw))
    assert "the raw weights" in (raw / CARD_FILE).read_text()


def test_the_card_keeps_the_folders_of_the_training_data_private():
    card = ModelCard(training={"data": ["/home/me/photos/set1", "clean.png"], "steps": 5})
    text = card.text(SparsePromptIR("tiny").config, "m")
    assert "| data | set1, clean.png |" in text and "/home" not in text
    assert "Not recorded with these weights" in text


def test_a_card_of_weights_started_from_promptir_says_their_terms_apply(run):
    state = dict(read_checkpoint(run))
    state["config"] = {**state["config"], "init_promptir": "promptir.ckpt"}
    card = ModelCard.from_checkpoint(state)
    assert card.license == "other"
    text = card.text(SparsePromptIR("tiny").config, "m")
    assert "license: other" in text and "non-commercial use only" in text


def test_the_command_line_exports_a_folder_and_restores_with_it(run, tmp_path, capsys):
    folder = tmp_path / "folder"
    assert main(["export", "--checkpoint", str(run), str(folder), "--format", "folder"]) == 0
    assert (folder / CARD_FILE).is_file()
    # the same folder again is refused unless asked
    assert main(["export", "--checkpoint", str(run), str(folder), "--format", "folder"]) == 2
    assert HELD in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(run), str(tmp_path / "x.safetensors"),
                 "--repo-id", "a/b"]) == 2  # fmt: skip
    assert "--repo-id goes with --format folder" in capsys.readouterr().err
    write_image(tmp_path / "a.png", torch.rand(3, 20, 20))
    args = [str(tmp_path / "a.png"), "--tile", "none", "--device", "cpu"]
    assert (
        main(["restore", "--checkpoint", str(folder), *args, "--output", str(tmp_path / "f")]) == 0
    )
    assert main(["restore", "--checkpoint", str(run), *args, "--output", str(tmp_path / "c")]) == 0
    assert (tmp_path / "f" / "a.png").read_bytes() == (tmp_path / "c" / "a.png").read_bytes()


def test_save_pretrained_never_writes_over_a_folder_unasked(tmp_path):
    model = SparsePromptIR("tiny")
    folder = save_pretrained(model, tmp_path / "m")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=HELD):
        save_pretrained(model, folder)
    torch.manual_seed(3)
    other = SparsePromptIR("tiny")
    save_pretrained(other, folder, overwrite=True)
    _equal_models(other, from_pretrained(folder))
    assert (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"expected a folder, got the file"):
        save_pretrained(model, tmp_path / "file")
    with pytest.raises(
        InputTypeError, match=r"of SparsePromptIRs of one configuration, got Linear"
    ):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "n")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"expected card to be a ModelCard, got dict"):
        save_pretrained(model, tmp_path / "n", card={})  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path):
    return save_pretrained(SparsePromptIR("tiny"), tmp_path / "m")


def _config(folder):
    return json.loads((folder / CONFIG_FILE).read_text())


def test_a_folder_missing_a_file_says_which(folder):
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"safetensors not found \(a model folder"):
        from_pretrained(folder)


def test_a_config_of_another_format_is_refused(folder):
    (folder / CONFIG_FILE).write_text(json.dumps({**_config(folder), "format": "other/1"}))
    with pytest.raises(CheckpointError, match=r"expected a config.json of format .*got 'other/1'"):
        from_pretrained(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"is not JSON"),
        ("[" * 100_000 + "]" * 100_000, r"is not JSON \(nested too deeply\)|at most"),
        ("[1, 2]", r"expected a config.json of format .*got 'list'"),
    ],
    ids=["not-json", "deep", "a-list"],
)
def test_a_config_that_is_not_a_config_is_refused(folder, text, message):
    (folder / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(folder)


def test_a_config_too_large_is_refused_before_it_is_read(folder):
    (folder / CONFIG_FILE).write_text(" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(CheckpointError, match=rf"at most {MAX_CONFIG_BYTES} bytes"):
        from_pretrained(folder)


def test_a_config_that_disagrees_with_the_weights_is_refused(folder):
    info = _config(folder)
    info["model_config"]["top_k"] = 2
    (folder / CONFIG_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"json and model.safetensors describe different"):
        from_pretrained(folder)


def test_a_source_that_is_neither_a_folder_nor_an_id_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"expected a model folder or a Hub repository id"):
        from_pretrained(tmp_path / "no" / "such" / "folder")
    (tmp_path / "file.pt").write_text("")
    with pytest.raises(InputError, match=r"expected a model folder, got the file"):
        from_pretrained(tmp_path / "file.pt")
    with pytest.raises(InputTypeError, match=r"expected a folder or a Hub id as a string, got int"):
        from_pretrained(3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"expected a Hub repository id 'owner/name', got 'x'"):
        export_folder("last.pt", tmp_path / "f", repo_id="x")


# -- the Hub, with no network: its cache and offline mode ------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cached(cache, repo_id, model):
    """``model`` saved where the Hub's cache keeps ``repo_id``'s main branch."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    save_pretrained(model, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "unreachable"])
def test_a_hub_id_loads_from_the_cache_without_the_network(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    model = SparsePromptIR("tiny")
    _cached(tmp_path, "someone/tiny", model)
    _equal_models(model, from_pretrained("someone/tiny", cache_dir=tmp_path))


@pytest.mark.parametrize(
    ("offline", "why"),
    [(True, "offline mode is on"), (False, "the Hub cannot be reached from here")],
    ids=["offline", "unreachable"],
)
def test_a_hub_id_out_of_reach_says_so_in_one_line(tmp_path, monkeypatch, offline, why):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(CheckpointError) as raised:
        from_pretrained("someone/absent", cache_dir=tmp_path)
    message = str(raised.value)
    assert "\n" not in message and why in message
    assert "hf download someone/absent --local-dir FOLDER" in message


def test_a_hub_id_without_huggingface_hub_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install huggingface_hub \(the hub extra\)"):
        from_pretrained("someone/tiny", cache_dir=tmp_path)


# -- sizes read from shapes (what spandrel and a bare state dict give) ---------------------------


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 6).map(lambda d: 4 * d),
    num_blocks=st.tuples(*[st.integers(0, 2)] * 4),
    refinement=st.integers(0, 2),
    heads=st.tuples(*[st.sampled_from([1, 2, 4])] * 4),
    ffn=st.sampled_from([1.0, 1.5, 2.0, 2.66, 3.0, 0.75, 2.1]),
    prompt_dims=st.tuples(*[st.integers(1, 3).map(lambda d: 4 * d)] * 3),
    prompt_sizes=st.tuples(*[st.integers(1, 9)] * 3),
    prompt_heads=st.sampled_from([1, 2, 4]),
    num_prompts=st.integers(1, 6),
    use_prompts=st.booleans(),
)
def test_the_sizes_read_from_the_shapes_build_the_same_network(
    dim, num_blocks, refinement, heads, ffn, prompt_dims, prompt_sizes, prompt_heads,
    num_prompts, use_prompts,
):  # fmt: skip
    options = {
        "dim": dim, "num_blocks": num_blocks, "num_refinement_blocks": refinement,
        "heads": heads, "ffn_expansion_factor": ffn, "prompt_dims": prompt_dims,
        "prompt_sizes": prompt_sizes, "prompt_heads": prompt_heads, "num_prompts": num_prompts,
        "use_prompts": use_prompts,
    }  # fmt: skip
    try:
        model = SparsePromptIR("tiny", device="meta", **options)
    except InputError:
        assume(False)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    found = model_config_of(model.state_dict(), top_k=1)
    rebuilt = SparsePromptIR("tiny", device="meta", **found)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    # every size in the shapes is read back as it was given
    for key in ("dim", "num_blocks", "num_refinement_blocks", "use_prompts", "prompt_heads"):
        assert found[key] == options[key]
    if use_prompts:
        assert (found["prompt_dims"], found["prompt_sizes"], found["num_prompts"]) == (
            prompt_dims,
            prompt_sizes,
            num_prompts,
        )
    used = [num_blocks[0] + refinement, *num_blocks[1:]]
    assert all(f == h for f, h, n in zip(found["heads"], heads, used, strict=True) if n)


def test_the_official_promptir_sizes_are_read_from_its_shapes():
    from .test_model import random_promptir_state_dict

    state = convert_promptir_state_dict(random_promptir_state_dict())
    found = model_config_of(state, top_k=5)
    assert SparsePromptIR("base", top_k=5).config == SparsePromptIR("base", **found).config


def test_sizes_cannot_be_read_from_what_is_not_the_reference_model():
    with pytest.raises(CheckpointError, match=r"expected a reference model's 'patch_embed.weight'"):
        model_config_of({"conv.weight": torch.zeros(1)})
    shapes = SparsePromptIR("tiny", device="meta").state_dict()
    shapes["fusion1.block.ffn.project_in.weight"] = torch.empty(2 * 7, 48, 1, 1, device="meta")
    with pytest.raises(CheckpointError, match=r"that no factor gives"):
        model_config_of(shapes)


def test_a_cpl_release_checkpoint_loads_with_one_expert(tmp_path):
    """CPL's released code saves PromptIR's names under BasicSR's ``params``, without PromptIR's
    six unused convolutions, and its training code may add an uncertainty head (``var_conv``)."""
    from .test_model import random_promptir_state_dict

    state = {k: v for k, v in random_promptir_state_dict(2).items()
             if not UNUSED_PROMPTIR_KEYS.match(k)}  # fmt: skip
    state["var_conv.0.weight"] = torch.rand(96, 96, 3, 3)
    path = tmp_path / "CPLIR_Weatherbench.pth"
    torch.save({"params": state}, path)
    model = load_checkpoint_model(path, promptir_top_k=1)
    expected = SparsePromptIR("base", top_k=1)
    expected.load_state_dict(convert_promptir_state_dict(state))
    _equal_models(expected, model)
    assert "var_conv.0.weight" not in convert_promptir_state_dict(state)


def test_the_cards_citation_is_the_citation_pages():
    page = Path(__file__).resolve().parents[1] / "docs" / "citation.md"
    if not page.is_file():
        pytest.skip("docs/ is not in this tree")
    for entry in CITATION.split("\n\n"):
        assert entry in page.read_text()


@pytest.mark.parametrize(("change", "message"), HOSTILE_CONFIGS)
def test_a_hostile_folder_config_is_refused_before_the_model_is_built(folder, change, message):
    """The folder's config.json and the weights' metadata both say the hostile sizes."""
    info = _config(folder)
    hostile = {**info["model_config"], **change}
    (folder / CONFIG_FILE).write_text(json.dumps({**info, "model_config": hostile}))
    metadata = {"format": "contrastive_prompts.weights/1", "model_config": json.dumps(hostile)}
    save_file(load_file(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE, metadata=metadata)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="model_config") as error:
        from_pretrained(folder)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert time.perf_counter() - start < 20  # refused, not built
