"""Pure semantics of the fake: strategic merge patch and selectors (no server)."""

from __future__ import annotations

import pytest

from ipa_tasks.fake_kube_api.patching import JSON_PATCH, MERGE_PATCH, STRATEGIC, apply_patch, patch_type
from ipa_tasks.fake_kube_api.selection import SelectorError, field_matcher, label_matcher

POD_SPEC = {
    "containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:1"},
    ],
    "tolerations": [{"key": "gpu"}],
}


def test_strategic_merge_merges_keyed_lists_and_replaces_the_others() -> None:
    patch = {
        "containers": [
            {
                "name": "a",
                "env": [{"name": "Y", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}],
            },
            {"name": "c", "image": "c:1"},
        ],
        "tolerations": [{"key": "cpu"}],
    }
    merged = apply_patch(POD_SPEC, patch, STRATEGIC)
    a, b, c = merged["containers"]
    assert a["image"] == "a:1" and a["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert a["ports"] == [{"containerPort": 80, "name": "http"}] and b == POD_SPEC["containers"][1]
    assert c == {"name": "c", "image": "c:1"} and merged["tolerations"] == [{"key": "cpu"}]
    assert POD_SPEC["containers"][0]["env"] == [{"name": "X", "value": "1"}]  # the original is untouched


def test_strategic_merge_directives_and_null_deletion() -> None:
    deleted = apply_patch(POD_SPEC, {"containers": [{"name": "b", "$patch": "delete"}]}, STRATEGIC)
    assert [c["name"] for c in deleted["containers"]] == ["a"]
    replaced = apply_patch(
        POD_SPEC, {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}, STRATEGIC
    )
    assert replaced["containers"] == [{"name": "z", "image": "z"}]
    assert "tolerations" not in apply_patch(POD_SPEC, {"tolerations": None}, STRATEGIC)


def test_merge_patch_replaces_lists() -> None:
    merged = apply_patch(POD_SPEC, {"containers": [{"name": "a"}]}, MERGE_PATCH)
    assert merged["containers"] == [{"name": "a"}]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/strategic-merge-patch+json", {}, STRATEGIC),
        ("application/merge-patch+json", {}, MERGE_PATCH),
        ("application/json-patch+json", [], JSON_PATCH),
    ],
)
def test_patch_type_follows_the_content_type(content_type: str, body: object, expected: str) -> None:
    assert patch_type(content_type, body) == expected


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("tier=serving,app", True),
        ("tier==serving", True),
        ("tier!=serving", False),
        ("gpu!=true", True),
        ("!gpu", True),
        ("!tier", False),
        ("tier in (batch, serving)", True),
        ("tier notin (serving)", False),
        ("app in (x),tier", False),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    obj = {"metadata": {"labels": {"tier": "serving", "app": "web"}}}
    assert label_matcher(selector)(obj) is matches


def test_bad_selectors_are_errors() -> None:
    with pytest.raises(SelectorError):
        label_matcher("tier in serving")
    with pytest.raises(SelectorError):
        field_matcher("no operator")


def test_field_selectors_read_dotted_paths() -> None:
    event = {"metadata": {"name": "e1"}, "involvedObject": {"name": "pod-1"}}
    assert field_matcher("involvedObject.name=pod-1,metadata.name!=e2")(event)
    assert not field_matcher("involvedObject.kind=Pod")(event)
