import pytest

from diffbox.params import SEED_MAX, InvalidParams, Param, ParamSpec
from diffbox.workflows.i2v import SPEC as I2V


def errors_of(spec, values):
    with pytest.raises(InvalidParams) as caught:
        spec.validate(values)
    return caught.value.errors


def test_defaults_validate_and_fill_missing_fields():
    clean = I2V.validate({})
    assert set(clean) == set(I2V.names)
    assert clean["num_frames"] == 81 and clean["width"] == 832 and clean["height"] == 480
    assert 0 <= clean["seed"] <= SEED_MAX


@pytest.mark.parametrize("frames,ok", [(81, True), (5, True), (9, True), (80, False), (82, False), (1, False)])
def test_frames_must_be_4n_plus_1(frames, ok):
    if ok:
        assert I2V.validate({"num_frames": frames})["num_frames"] == frames
    else:
        assert "num_frames" in errors_of(I2V, {"num_frames": frames})


def test_frames_message_suggests_neighbours():
    assert errors_of(I2V, {"num_frames": 80})["num_frames"] == "must be 4n+1 (e.g. 77 or 81), got 80"


@pytest.mark.parametrize("value", [500, 833, 8])
def test_width_and_height_must_be_multiples_of_16(value):
    errors = errors_of(I2V, {"width": value, "height": value})
    assert set(errors) == {"width", "height"}
    if value == 500:
        assert "multiple of 16 (e.g. 496 or 512)" in errors["width"]


def test_random_seed_is_resolved_and_recorded():
    seeds = {I2V.validate({"seed": -1})["seed"] for _ in range(20)}
    assert all(0 <= s <= SEED_MAX for s in seeds)
    assert len(seeds) > 1  # really random, not a constant
    assert I2V.validate({"seed": 1234})["seed"] == 1234


@pytest.mark.parametrize("seed", [-2, SEED_MAX + 1, 1.5, "abc", True])
def test_bad_seeds_are_rejected(seed):
    assert "seed" in errors_of(I2V, {"seed": seed})


def test_unknown_keys_are_rejected_and_named():
    errors = errors_of(I2V, {"promt": "typo", "steps": 4})
    assert "promt" in errors["params"] and "steps" in errors["params"]


def test_one_error_names_every_bad_field():
    with pytest.raises(InvalidParams) as caught:
        I2V.validate({"width": 10, "num_frames": 8, "guidance_scale": "loud", "fps": 0, "x": 1})
    assert set(caught.value.errors) == {"width", "num_frames", "guidance_scale", "fps", "params"}
    message = str(caught.value)
    for field in ("width", "num_frames", "guidance_scale", "fps"):
        assert field in message


def test_numbers_from_json_and_forms_are_coerced_but_not_booleans():
    clean = I2V.validate({"num_frames": 81.0, "width": "512", "guidance_scale": "4.5", "fps": 24})
    assert clean["num_frames"] == 81 and isinstance(clean["num_frames"], int)
    assert clean["width"] == 512 and clean["guidance_scale"] == 4.5
    assert "num_inference_steps" in errors_of(I2V, {"num_inference_steps": True})
    assert "guidance_scale" in errors_of(I2V, {"guidance_scale": float("nan")})
    assert "num_frames" in errors_of(I2V, {"num_frames": 81.5})


def test_ranges_and_types():
    assert errors_of(I2V, {"num_inference_steps": 0})["num_inference_steps"] == "must be between 1 and 200, got 0"
    assert "prompt" in errors_of(I2V, {"prompt": 42})
    assert "prompt" in errors_of(I2V, {"prompt": "x" * 30_000})
    assert "params" in errors_of(I2V, ["not", "a", "dict"])


def test_null_is_a_missing_value_unless_nullable():
    assert errors_of(I2V, {"width": None})["width"] == "a value is required"
    spec = ParamSpec("t", (Param("ratio", "float", None, "h", nullable=True, minimum=0, maximum=1),))
    assert spec.validate({"ratio": None}) == {"ratio": None}
    assert spec.validate({"ratio": 0.5}) == {"ratio": 0.5}


def test_choices_bools_and_lists():
    spec = ParamSpec("t", (
        Param("scheduler", "choice", "unipc", "h", choices=("unipc", "euler")),
        Param("tiling", "bool", False, "h"),
        Param("prompts", "list", [], "h", max_items=3, item=lambda v: v if isinstance(v, str) else
              (_ for _ in ()).throw(ValueError("must be text"))),
    ))
    assert spec.validate({"scheduler": "euler", "tiling": "true", "prompts": ("a", "b")}) == \
        {"scheduler": "euler", "tiling": True, "prompts": ["a", "b"]}
    errors = errors_of(spec, {"scheduler": "ddim", "tiling": 1, "prompts": ["a", 2]})
    assert "unipc, euler" in errors["scheduler"]
    assert "true or false" in errors["tiling"]
    assert errors["prompts"] == "item 2: must be text"
    assert "at most 3" in errors_of(spec, {"prompts": ["a"] * 4})["prompts"]


def test_cross_field_checks_run_on_clean_values():
    spec = ParamSpec("t", (Param("lo", "int", 1, "h"), Param("hi", "int", 2, "h")),
                     checks=(lambda v: {"hi": "must be above lo"} if v["hi"] <= v["lo"] else {},))
    assert spec.validate({"lo": 1, "hi": 5})["hi"] == 5
    assert errors_of(spec, {"lo": 3, "hi": 3}) == {"hi": "must be above lo"}


def test_extend_inherits_and_with_defaults_overrides():
    svi_like = I2V.extend(Param("num_clips", "int", 10, "clips", minimum=1, maximum=1000), workflow="svi")
    assert svi_like.workflow == "svi" and "num_frames" in svi_like and "num_clips" in svi_like
    with pytest.raises(ValueError, match="declared twice"):
        I2V.extend(Param("width", "int", 16, "again"))
    small = I2V.with_defaults({"width": 64, "num_frames": 9, "seed": -1})
    assert small.validate({})["width"] == 64 and small["seed"].default == -1
    assert I2V["width"].default == 832  # the original spec is untouched
    with pytest.raises(InvalidParams):
        I2V.with_defaults({"num_frames": 10})


def test_a_bad_default_fails_at_declaration():
    with pytest.raises(ValueError):
        ParamSpec("t", (Param("frames", "int", 80, "h", congruent=(4, 1)),))


def test_first_moves_parameters_to_the_front_and_keeps_the_rest():
    moved = I2V.first("num_frames", "fps")
    assert moved.names[:2] == ["num_frames", "fps"] and sorted(moved.names) == sorted(I2V.names)
    assert moved.validate({"num_frames": 9})["num_frames"] == 9
