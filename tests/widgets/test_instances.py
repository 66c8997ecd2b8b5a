"""The grouped model chooser and *Automatic instances* in the widget: groups come from the registry
(with sizes and one-line summaries), the button is enabled only with a model that has an instance
decoder, results go to a layer with role ``instances`` that a second run replaces only while it is
untouched, and no layer the user made or edited is ever written."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox

from napari_sam import weights
from napari_sam.engine import instance_defaults, segment_instances
from napari_sam.model import build_decoder
from napari_sam.widgets import model_list
from napari_sam.widgets.instances_panel import TIP

from .helpers import add_point, go_to, points_layer, press, with_role


def test_chooser_groups_models_as_the_registry_does(widget):
    combo = widget.ui.model
    groups = weights.models_by_group()
    assert model_list.headings(combo) == [*groups, model_list.FILES_GROUP]
    assert model_list.model_names(combo) == [info.name for infos in groups.values() for info in infos]
    sam2 = combo.findData("sam2.1_hiera_t")  # SAM 2.1 models: their own group, after SAM 1, with their sizes
    assert model_list.headings(combo).index("SAM 1") < model_list.headings(combo).index("SAM 2")
    assert combo.itemText(combo.findText("SAM 2") + 1) == combo.itemText(sam2) and "156 MB" in combo.itemText(sam2)
    for i in range(combo.count()):
        if combo.itemData(i) == "":  # a heading: cannot be chosen
            assert not combo.model().item(i).isEnabled() and not combo.model().item(i).isSelectable()
    vit_b = combo.findData("vit_b")
    assert "375 MB" in combo.itemText(vit_b) and "≈" not in combo.itemText(vit_b)
    lm = combo.findData("vit_b_lm")
    tip = combo.itemData(lm, Qt.ToolTipRole)
    assert weights.REGISTRY["vit_b_lm"].summary in tip and "decoder" in tip and "Automatic instances" in tip
    assert combo.currentData() == "vit_b_lm"  # the microscopist's default (docs/models.md)
    assert widget.ui.model_info.full_text() == tip
    combo.setCurrentIndex(combo.findData("vit_h"))
    assert widget.ui.model_info.full_text().startswith(weights.REGISTRY["vit_h"].summary)
    assert "decoder" not in widget.ui.model_info.full_text()


def test_a_new_group_appears_from_the_registry_alone():
    saved = dict(weights.REGISTRY)  # restored in its order (the chooser lists models in registry order)
    try:
        for name in [n for n, info in saved.items() if info.group == "SAM 2"]:
            del weights.REGISTRY[name]
        combo = QComboBox()
        model_list.fill_models(combo)
        assert "SAM 2" not in model_list.headings(combo)  # a group with no model is absent
        weights.REGISTRY["sam2_fake"] = replace(saved["vit_b"], name="sam2_fake", group="SAM 2", summary="A SAM 2 stand-in.")
        combo = QComboBox()
        model_list.fill_models(combo)
        headings = model_list.headings(combo)
        assert headings.index("SAM 1") < headings.index("SAM 2") < headings.index("Light microscopy")
        assert combo.itemData(combo.findText("SAM 2") + 1) == "sam2_fake"
    finally:
        weights.REGISTRY.clear()
        weights.REGISTRY.update(saved)


def test_the_decoder_size_is_the_decoders():
    state = build_decoder(upsampler="transpose").state_dict()
    assert model_list.DECODER_BYTES == pytest.approx(sum(t.numel() * 4 for t in state.values()), rel=0.05)


def test_button_follows_the_models_decoder(viewer, widget, rgb_image, tiny_checkpoint, decoder_checkpoint):
    w, run = widget, widget.ui.instances.run
    viewer.add_image(rgb_image, name="discs")
    assert not run.isEnabled() and "Load a model first" in run.toolTip()
    w.load_model(str(tiny_checkpoint), device="cpu")
    assert w.wait_idle(60)
    assert not run.isEnabled() and "has no instance decoder" in run.toolTip() and "vit_b_lm" in run.toolTip()
    assert not w.segment_instances() and "instance-segmentation decoder" in w.status_text
    w.ui.instances.boxes["min_size"].setValue(77)
    w.load_model(str(decoder_checkpoint), device="cpu")
    assert w.wait_idle(60)
    assert run.isEnabled() and run.toolTip() == TIP
    assert w.ui.instances.values() == pytest.approx(instance_defaults(None))  # reset for the new model
    assert w.ui.instances.scope.isHidden()  # a 2D picture: no scope choice


@pytest.fixture()
def ais(viewer, widget, rgb_image, decoder_checkpoint):
    viewer.add_image(rgb_image, name="discs", scale=(0.5, 0.5), translate=(3, 4))
    widget.load_model(str(decoder_checkpoint), device="cpu")
    assert widget.wait_idle(60) and widget.embedding is not None, widget.status_text
    return widget


def test_a_new_layer_with_the_role_and_committed_labels_untouched(ais, viewer):
    w = ais
    add_point(viewer, 80, 100)
    assert w.wait_idle(60) and w.commit()
    (committed,) = with_role(viewer, "labels")
    before = committed.data.copy()
    w.ui.instances.boxes["min_size"].setValue(3)
    w.ui.instances.run.click()
    assert w.wait_idle(60), w.status_text
    (layer,) = with_role(viewer, "instances")
    meta = layer.metadata["napari_sam"]
    assert layer.name == "SAM instances" and meta["scope"] == "plane" and meta["params"]["min_size"] == 3
    expected = segment_instances(w.session.embedding[1], w.session.model.decoder, **meta["params"])
    np.testing.assert_array_equal(layer.data, expected)
    assert meta["count"] == expected.max() > 0
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (3, 4)
    np.testing.assert_array_equal(committed.data, before)
    assert w.ui.labels.currentText() == committed.name  # commits still go where they went
    active = viewer.layers.selection.active
    assert active is points_layer(viewer)  # our keys still work
    press(active, "N")
    assert not w.session.positive


def test_a_second_run_replaces_only_our_untouched_layer(ais, viewer):
    w = ais
    user = viewer.add_labels(np.full((300, 400), 9, np.uint32), name="SAM instances")  # the user's, same name
    assert w.segment_instances() and w.wait_idle(60)
    ours = [lay for lay in with_role(viewer, "instances")]
    assert len(ours) == 1 and ours[0] is not user and (user.data == 9).all()
    assert w.segment_instances(min_size=4) and w.wait_idle(60)
    assert with_role(viewer, "instances") == ours  # replaced in place
    assert ours[0].metadata["napari_sam"]["params"]["min_size"] == 4
    ours[0].data_setitem((np.array([0]), np.array([0])), 123)  # the user edits it: now it is theirs
    edited = ours[0].data.copy()
    assert w.segment_instances() and w.wait_idle(60)
    layers = with_role(viewer, "instances")
    assert len(layers) == 2 and ours[0] in layers  # another layer; the edited one kept as it is
    np.testing.assert_array_equal(ours[0].data, edited)
    assert (user.data == 9).all()


def test_stack_scope_in_the_widget(viewer, widget, stack, decoder_checkpoint):
    w = widget
    viewer.add_image(stack, name="stack")
    go_to(viewer, 2)
    w.load_model(str(decoder_checkpoint), device="cpu")
    assert w.wait_idle(60)
    panel = w.ui.instances
    assert not panel.scope.isHidden() and panel.chosen_scope() == "plane"
    panel.scope.setCurrentIndex(panel.scope.findData("stack"))
    panel.run.click()
    assert w.wait_idle(120), w.status_text
    (layer,) = with_role(viewer, "instances")
    assert layer.data.shape == stack.shape and layer.metadata["napari_sam"]["scope"] == "stack"
    assert all(layer.data[z].any() for z in range(5)) and "merged across planes" in w.status_text
    with pytest.raises(ValueError, match="scope"):
        w.segment_instances("everything")


def test_cancel_in_the_widget_leaves_no_layer(viewer, widget, stack, decoder_checkpoint):
    w = widget
    viewer.add_image(stack, name="stack")
    w.load_model(str(decoder_checkpoint), device="cpu")
    assert w.wait_idle(60) and not w.ui.cancel.isEnabled()
    assert w.segment_instances("stack")
    assert w.ui.cancel.isEnabled()  # exactly while the job runs
    w.ui.cancel.click()
    assert w.wait_idle(60) and not w.ui.cancel.isEnabled()
    assert not with_role(viewer, "instances") and "cancelled" in w.status_text
