"""Standard (SNOMED CT) terminology for the organs MaskMed's phantom and demo model segment.

A Slicer segment carries its meaning in the ``TerminologyEntry`` tag, a string of seven ``~``-separated
fields ``context~category~type~typeModifier~anatomicContext~region~regionModifier``, each code written
``CodingScheme^CodeValue^CodeMeaning`` (empty code: ``^^``). The codes, the display names
(``3dSlicerLabel``) and the colours (``recommendedDisplayRGBValue``) below are those of Slicer's DICOM
master list, ``Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-DICOM-Master.json``
(for a paired structure such as the kidney, the name and colour are the laterality modifier's). This is
what SlicerTotalSegmentator applies with "use standard segment names": the tag always, the name and the
colour where the terminology has them.
"""

from __future__ import annotations

from typing import NamedTuple

import slicer

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


class Code(NamedTuple):
    scheme: str
    value: str
    meaning: str

    def __str__(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


EMPTY_CODE = Code("", "", "")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
LEFT = Code("SCT", "7771000", "Left")
RIGHT = Code("SCT", "24028007", "Right")
KIDNEY = Code("SCT", "64033007", "Kidney")


class TerminologyCodes(NamedTuple):
    """One structure of the DICOM master list.

    Attributes:
        category, type, type_modifier: the codes of the terminology entry.
        name: Slicer's display name for it (``3dSlicerLabel``).
        color: Slicer's recommended display colour, RGB 0..255.
    """

    category: Code
    type: Code
    type_modifier: Code = EMPTY_CODE
    name: str = ""
    color: tuple[int, int, int] | None = None


#: Class name (as in dataset.json / the checkpoint) -> codes, Slicer name and colour.
ORGAN_TERMINOLOGY: dict[str, TerminologyCodes] = {
    "liver": TerminologyCodes(
        ANATOMICAL_STRUCTURE, Code("SCT", "10200004", "Liver"), name="liver", color=(221, 130, 101)
    ),
    "spleen": TerminologyCodes(
        ANATOMICAL_STRUCTURE, Code("SCT", "78961009", "Spleen"), name="spleen", color=(157, 108, 162)
    ),
    "kidney_left": TerminologyCodes(ANATOMICAL_STRUCTURE, KIDNEY, LEFT, name="left kidney", color=(185, 102, 83)),
    "kidney_right": TerminologyCodes(ANATOMICAL_STRUCTURE, KIDNEY, RIGHT, name="right kidney", color=(185, 102, 83)),
    "aorta": TerminologyCodes(
        ANATOMICAL_STRUCTURE, Code("SCT", "15825003", "Aorta"), name="aorta", color=(224, 97, 76)
    ),
}


def normalise_name(name: str) -> str:
    """``"Kidney Left"`` / ``"kidney-left"`` -> ``"kidney_left"``."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def standard_term(name: str) -> TerminologyCodes | None:
    """The master-list entry of a class name, or None when no mapping is known."""
    return ORGAN_TERMINOLOGY.get(normalise_name(name))


def terminology_entry(name: str) -> str | None:
    """The ``TerminologyEntry`` tag string for a class name, or None when no mapping is known."""
    codes = standard_term(name)
    if codes is None:
        return None
    fields = (
        TERMINOLOGY_CONTEXT,
        str(codes.category),
        str(codes.type),
        str(codes.type_modifier),
        ANATOMIC_CONTEXT,
        str(EMPTY_CODE),  # anatomic region: none (the type is itself the anatomy)
        str(EMPTY_CODE),
    )
    return "~".join(fields)


def apply_standard_terminology(segment, class_name: str) -> bool:
    """Tag a ``vtkSegment`` with its class's terminology and give it Slicer's standard name and colour.

    The segment ID is not changed (MaskMed finds its segments by class name). Unknown classes are left
    as they are.

    Returns:
        Whether the class has a standard term.
    """
    codes = standard_term(class_name)
    if codes is None:
        return False
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(class_name))
    if codes.name:
        segment.SetName(codes.name)
    if codes.color is not None:
        segment.SetColor(*(c / 255.0 for c in codes.color))
    return True
