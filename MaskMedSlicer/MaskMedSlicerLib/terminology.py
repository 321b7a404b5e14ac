"""Standard (SNOMED CT) terminology for the organs MaskMed's phantom and demo model segment.

A Slicer segment carries its meaning in the ``TerminologyEntry`` tag, a string of seven ``~``-separated
fields ``context~category~type~typeModifier~anatomicContext~region~regionModifier``, each code written
``CodingScheme^CodeValue^CodeMeaning`` (empty code: ``^^``). The codes below are the SNOMED CT
concepts that the DICOM master list and SlicerTotalSegmentator use for these structures.
"""

from __future__ import annotations

from typing import NamedTuple

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


class TerminologyCodes(NamedTuple):
    category: Code
    type: Code
    type_modifier: Code = EMPTY_CODE


#: Class name (as in dataset.json / the checkpoint) -> codes.
ORGAN_TERMINOLOGY: dict[str, TerminologyCodes] = {
    "liver": TerminologyCodes(ANATOMICAL_STRUCTURE, Code("SCT", "10200004", "Liver")),
    "spleen": TerminologyCodes(ANATOMICAL_STRUCTURE, Code("SCT", "78961009", "Spleen")),
    "kidney_left": TerminologyCodes(ANATOMICAL_STRUCTURE, Code("SCT", "64033007", "Kidney"), LEFT),
    "kidney_right": TerminologyCodes(ANATOMICAL_STRUCTURE, Code("SCT", "64033007", "Kidney"), RIGHT),
    "aorta": TerminologyCodes(ANATOMICAL_STRUCTURE, Code("SCT", "15825003", "Aorta")),
}


def normalise_name(name: str) -> str:
    """``"Kidney Left"`` / ``"kidney-left"`` -> ``"kidney_left"``."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def terminology_entry(name: str) -> str | None:
    """The ``TerminologyEntry`` tag string for a class name, or None when no mapping is known."""
    codes = ORGAN_TERMINOLOGY.get(normalise_name(name))
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
