"""Class names shortened one way for every class, checked against names written by hand."""

from olsdesk.core.names import class_groups, pair_name, short_names

RADIMAGENET = ["CT/abd/normal", "CT/abd/cyst", "CT/lung/normal", "MR/knee/bone_marrow_edema",
               "MR/knee/bone_marrow_lesion", "MR/abd/cyst", "US/spleen/normal"]


def test_every_class_keeps_as_many_levels_as_the_most_ambiguous_needs():
    # 'cyst' and 'abd/cyst' are in CT and MR: every name keeps all three levels
    assert short_names(RADIMAGENET, limit=40) == RADIMAGENET
    # unique findings: the finding alone, for every class alike
    assert short_names(["CT/lung/nodule", "MR/brain/edema", "US/liver/cyst"]) == [
        "nodule", "edema", "cyst"]
    # 'normal' twice: anatomy/finding for all, not only for the two normals
    assert short_names(["CT/lung/normal", "MR/brain/normal", "MR/brain/edema"]) == [
        "lung/normal", "brain/normal", "brain/edema"]
    assert short_names(["a", "b"]) == ["a", "b"] and short_names([]) == []


def test_a_long_name_keeps_its_leading_levels_and_both_ends_of_its_last():
    short = short_names(RADIMAGENET, limit=18)
    assert short[:3] == ["CT/abd/normal", "CT/abd/cyst", "CT/lung/normal"]
    assert short[3] == "MR/knee/bon…_edema"
    assert short[4] == "MR/knee/bon…lesion"
    assert all(len(s) <= 18 for s in short) and len(set(short)) == len(short)
    # no room for the finding beside its levels: the anatomy is cut short
    assert short_names(["MR/shoulder/normal", "CT/shoulder/normal", "MR/shoulder/effusion",
                        "MR/shoulder/degenerative_change"], limit=16) == [
        "MR/sho…/normal", "CT/sho…/normal", "MR/sho…/effusion", "MR/sho…/de…hange"]
    # nor beside one level: the middle of the whole name goes
    assert short_names(["alpha_modality/anatomy_long/x1", "beta_modality/anatomy_long/x1"],
                       limit=12) == ["alp…_long/x1", "bet…_long/x1"]


def test_shortening_never_makes_two_classes_look_alike():
    names = ["bone_marrow_edema_a", "bone_marrow_edema_b", "bone_marrow_x_edema_a"]
    # the first and the last would both be 'bon…_edema_a': they stay whole
    assert short_names(names, limit=12) == [names[0], "bon…_edema_b", names[2]]


def test_a_pair_names_its_shared_levels_once():
    assert pair_name("US/spleen/normal", "US/spleen/cyst") == "US/spleen: normal → cyst"
    assert pair_name("CT/abd/cyst", "CT/lung/nodule") == "CT: abd/cyst → lung/nodule"
    assert pair_name("CT/abd/cyst", "MR/abd/cyst") == "CT/abd/cyst → MR/abd/cyst"
    assert pair_name("normal", "cyst") == "normal → cyst"


def test_classes_group_by_modality_or_anatomy_in_their_order():
    assert class_groups(RADIMAGENET, 1) == (["CT", "MR", "US"], [0, 0, 0, 1, 1, 1, 2])
    assert class_groups(RADIMAGENET, 2) == (
        ["CT/abd", "CT/lung", "MR/knee", "MR/abd", "US/spleen"], [0, 0, 1, 2, 2, 3, 4])
    # shallower names: their parent folder; no folder: the name itself
    assert class_groups(["US/cyst", "US/liver/mass", "normal"], 2) == (
        ["US", "US/liver", "normal"], [0, 1, 2])
