"""Published spine morphometry, posture and CT-intensity reference values.

Per-level (T1..L5) means and standard deviations used to parameterise the
procedural spine CT phantoms, plus normal posture ranges and tissue CT numbers.
Standard library only.

Provenance and honesty notes
----------------------------
* The *primary* sources are the cadaveric caliper/digitiser studies of
  Panjabi et al. (1991 thoracic, 1992 lumbar, 1993 facets) and Zindrick et al.
  (1987, pedicles).  Panjabi published means +- standard error (n = 12
  specimens per level); SDs here are approximate (SE x sqrt(12) ~ 3.5 x SE,
  rounded) or, where the SE was not available to us, set from a typical
  coefficient of variation (~6-10 % for linear body dimensions, ~10-15 % for
  posterior-element dimensions, 3-6 deg for angles).  See ``FIELD_SOURCES``.
* The full Panjabi/Zindrick tables could not be retrieved verbatim while this
  file was written (only abstracts and secondary summaries were reachable);
  the per-level means below are transcribed from those tables as remembered
  and cross-checked against the summaries/CT studies that were retrieved
  (Zindrick extremes via a secondary summary, Egwu 2019, Kaur 2016, the
  L5 CT table of a NZ Maori/European CT cohort, Wang 2012, Masharawi 2004).
  Treat them as literature-consistent to within about 1-2 mm / a few degrees,
  not as exact copies.  Values that are our own estimates are flagged
  "ESTIMATED" in ``FIELD_SOURCES``.
* Cadaveric dry-bone values (Panjabi, Zindrick, Masharawi) are typically
  0.5-2 mm smaller than in-vivo CT of the same structure (soft tissue,
  cartilage and partial-volume blur add to CT outlines), and Asian cohorts
  are on average smaller than the (mostly Caucasian) cadaver collections.

Per-level table (mean +- SD; mm unless deg)
-------------------------------------------

| Level | Body W | Body D | H ant | H post | Ped W | Ped H | Ped TA (deg) | Canal W | Canal D | SP len | TP width |
|---|---|---|---|---|---|---|---|---|---|---|---|
| T1 | 25.5 ± 2.0 | 15.8 ± 1.4 | 14.6 ± 1.2 | 15.8 ± 1.2 | 7.9 ± 1.2 | 9.9 ± 1.3 | 27.0 ± 5.0 | 21.0 ± 1.8 | 14.5 ± 1.4 | 47.0 ± 5.0 | 75.0 ± 5.0 |
| T2 | 25.0 ± 2.0 | 17.2 ± 1.4 | 15.9 ± 1.2 | 17.0 ± 1.2 | 7.0 ± 1.1 | 11.9 ± 1.3 | 20.8 ± 5.0 | 18.6 ± 1.6 | 15.0 ± 1.4 | 47.0 ± 5.0 | 70.0 ± 5.0 |
| T3 | 25.0 ± 2.0 | 18.6 ± 1.5 | 16.1 ± 1.2 | 17.5 ± 1.2 | 5.6 ± 1.0 | 12.4 ± 1.3 | 14.4 ± 4.5 | 17.4 ± 1.5 | 15.2 ± 1.4 | 46.0 ± 5.0 | 66.0 ± 5.0 |
| T4 | 25.5 ± 2.0 | 20.1 ± 1.6 | 16.4 ± 1.2 | 17.8 ± 1.2 | 4.5 ± 0.9 | 12.2 ± 1.3 | 12.5 ± 4.0 | 16.6 ± 1.4 | 15.3 ± 1.4 | 46.0 ± 5.0 | 64.0 ± 4.5 |
| T5 | 26.8 ± 2.0 | 22.0 ± 1.7 | 16.8 ± 1.3 | 18.3 ± 1.3 | 4.7 ± 0.9 | 11.6 ± 1.3 | 11.6 ± 4.0 | 16.5 ± 1.4 | 15.4 ± 1.4 | 45.0 ± 5.0 | 63.0 ± 4.5 |
| T6 | 28.0 ± 2.1 | 23.8 ± 1.8 | 17.4 ± 1.3 | 18.8 ± 1.3 | 4.9 ± 0.9 | 11.9 ± 1.3 | 10.4 ± 4.0 | 16.3 ± 1.4 | 15.5 ± 1.4 | 45.0 ± 5.0 | 63.0 ± 4.5 |
| T7 | 29.4 ± 2.2 | 25.2 ± 1.9 | 18.0 ± 1.4 | 19.6 ± 1.4 | 5.0 ± 1.0 | 12.1 ± 1.3 | 8.5 ± 4.0 | 16.4 ± 1.4 | 15.6 ± 1.4 | 44.0 ± 5.0 | 62.0 ± 4.5 |
| T8 | 31.0 ± 2.3 | 26.5 ± 2.0 | 18.6 ± 1.4 | 20.0 ± 1.4 | 5.3 ± 1.0 | 12.6 ± 1.4 | 8.0 ± 4.0 | 16.6 ± 1.4 | 15.7 ± 1.4 | 43.0 ± 5.0 | 61.0 ± 4.5 |
| T9 | 32.8 ± 2.4 | 27.5 ± 2.1 | 19.4 ± 1.5 | 20.6 ± 1.5 | 5.9 ± 1.1 | 13.6 ± 1.5 | 7.0 ± 4.0 | 16.9 ± 1.5 | 15.9 ± 1.5 | 41.0 ± 4.8 | 60.0 ± 4.5 |
| T10 | 34.6 ± 2.5 | 28.6 ± 2.2 | 20.6 ± 1.6 | 21.4 ± 1.6 | 6.4 ± 1.2 | 15.3 ± 1.6 | 5.0 ± 4.0 | 17.4 ± 1.5 | 16.3 ± 1.5 | 38.0 ± 4.6 | 57.0 ± 4.5 |
| T11 | 37.2 ± 2.7 | 29.5 ± 2.3 | 21.7 ± 1.7 | 22.8 ± 1.7 | 7.5 ± 1.4 | 17.4 ± 1.7 | -1.0 ± 4.0 | 19.0 ± 1.7 | 17.0 ± 1.6 | 35.0 ± 4.4 | 50.0 ± 5.0 |
| T12 | 39.6 ± 2.9 | 30.5 ± 2.4 | 22.6 ± 1.8 | 24.0 ± 1.8 | 7.8 ± 1.5 | 16.7 ± 1.7 | -4.2 ± 4.5 | 21.4 ± 1.9 | 17.5 ± 1.7 | 33.0 ± 4.2 | 45.0 ± 5.0 |
| L1 | 40.5 ± 3.0 | 30.8 ± 2.4 | 24.6 ± 1.9 | 25.9 ± 1.9 | 8.7 ± 1.6 | 15.4 ± 1.7 | 10.9 ± 4.0 | 22.8 ± 2.1 | 18.8 ± 1.9 | 33.0 ± 4.0 | 68.0 ± 6.0 |
| L2 | 42.3 ± 3.1 | 32.0 ± 2.5 | 25.6 ± 1.9 | 25.8 ± 1.9 | 8.9 ± 1.7 | 15.0 ± 1.6 | 12.0 ± 4.0 | 22.9 ± 2.1 | 18.0 ± 1.9 | 34.0 ± 4.0 | 74.0 ± 6.0 |
| L3 | 44.4 ± 3.2 | 33.3 ± 2.6 | 26.4 ± 2.0 | 25.2 ± 1.9 | 10.3 ± 1.9 | 14.9 ± 1.6 | 14.4 ± 4.0 | 23.5 ± 2.2 | 17.4 ± 1.9 | 34.0 ± 4.0 | 80.0 ± 6.0 |
| L4 | 46.6 ± 3.4 | 34.4 ± 2.7 | 26.6 ± 2.0 | 24.4 ± 1.9 | 12.9 ± 2.1 | 14.8 ± 1.7 | 17.7 ± 4.5 | 24.3 ± 2.4 | 17.6 ± 2.0 | 32.0 ± 4.0 | 77.0 ± 6.0 |
| L5 | 48.8 ± 3.6 | 35.0 ± 2.8 | 27.0 ± 2.1 | 23.2 ± 1.9 | 18.0 ± 2.6 | 14.0 ± 1.9 | 29.8 ± 5.5 | 26.6 ± 2.8 | 18.2 ± 2.1 | 28.0 ± 4.0 | 80.0 ± 7.0 |

``table_markdown()`` renders the complete table from ``MORPHOMETRY``.

Sources
-------
See ``SOURCES`` (key -> citation): panjabi1991, panjabi1992, panjabi1993,
zindrick1987, kim1994, zhou2000, masharawi2004, wang2012, egwu2019, kaur2016,
lumbar_ct_nz, mri_disc_iran, mri_disc_nepal, lumbar_alignment_627,
spine_secrets, vialle2005, srs_scoliosis, aaro1981, radclass_hu, prokop2003,
pickhardt2013, hu_fracture_elderly, silva1994, ritzel1997, vanderhouwen2010,
palepu2019, segami2021.
"""  # noqa: E501 (the per-level Markdown table above)

from dataclasses import dataclass, fields

__all__ = [
    "CORTICAL_THICKNESS_MM",
    "FIELD_SOURCES",
    "INFERIOR_ENDPLATE_CONCAVITY_MM",
    "LEVELS",
    "MORPHOMETRY",
    "POSTURE",
    "POSTURE_SOURCES",
    "SOURCES",
    "TISSUE_HU",
    "TISSUE_SOURCES",
    "LevelMorphometry",
    "Range",
    "Stat",
    "table_markdown",
]


@dataclass(frozen=True)
class Stat:
    """One measurement: mean and standard deviation (mm or degrees)."""

    mean: float
    sd: float


@dataclass(frozen=True)
class LevelMorphometry:
    level: str  # "T1".."T12", "L1".."L5"
    body_width: Stat  # upper endplate transverse width, mm
    body_depth: Stat  # upper endplate antero-posterior depth, mm
    body_height_ant: Stat  # anterior body height, mm
    body_height_post: Stat  # posterior body height, mm
    endplate_concavity: Stat  # central depth of upper-endplate concavity, mm
    pedicle_width: Stat  # transverse pedicle isthmus width, mm
    pedicle_height: Stat  # sagittal pedicle height, mm
    pedicle_transverse_angle: Stat  # medial convergence in axial plane, deg (+ = medial)
    pedicle_sagittal_angle: Stat  # deg (+ = cephalad tilt of the pedicle axis)
    canal_width: Stat  # interpedicular width, mm
    canal_depth: Stat  # mid-sagittal canal depth, mm
    lamina_height: Stat  # mm
    lamina_thickness: Stat  # mm
    spinous_length: Stat  # mm (canal/lamina junction to tip)
    spinous_inclination: Stat  # downward slope vs transverse plane, deg
    transverse_width: Stat  # tip-to-tip across transverse processes, mm
    transverse_length: Stat  # one process, mm
    facet_transverse_angle: Stat  # superior facet in axial plane, deg (0 = coronal)
    facet_sagittal_angle: Stat  # superior facet vs transverse plane, deg (90 = vertical)
    disc_height_below: Stat  # mid-disc height of the disc below, mm


@dataclass(frozen=True)
class Range:
    """A clinical or physical range."""

    lo: float
    hi: float


LEVELS: tuple[str, ...] = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])

# ---------------------------------------------------------------------------
# Per-field columns, 17 entries T1..L5, each (mean, sd).
# ---------------------------------------------------------------------------
_COLS: dict[str, list[tuple[float, float]]] = {
    # Panjabi 1991 (T) / 1992 (L) EPWu.
    "body_width": [
        (25.5, 2.0),
        (25.0, 2.0),
        (25.0, 2.0),
        (25.5, 2.0),
        (26.8, 2.0),
        (28.0, 2.1),
        (29.4, 2.2),
        (31.0, 2.3),
        (32.8, 2.4),
        (34.6, 2.5),
        (37.2, 2.7),
        (39.6, 2.9),
        (40.5, 3.0),
        (42.3, 3.1),
        (44.4, 3.2),
        (46.6, 3.4),
        (48.8, 3.6),
    ],
    # Panjabi EPDu.
    "body_depth": [
        (15.8, 1.4),
        (17.2, 1.4),
        (18.6, 1.5),
        (20.1, 1.6),
        (22.0, 1.7),
        (23.8, 1.8),
        (25.2, 1.9),
        (26.5, 2.0),
        (27.5, 2.1),
        (28.6, 2.2),
        (29.5, 2.3),
        (30.5, 2.4),
        (30.8, 2.4),
        (32.0, 2.5),
        (33.3, 2.6),
        (34.4, 2.7),
        (35.0, 2.8),
    ],
    # Panjabi VBHa.
    "body_height_ant": [
        (14.6, 1.2),
        (15.9, 1.2),
        (16.1, 1.2),
        (16.4, 1.2),
        (16.8, 1.3),
        (17.4, 1.3),
        (18.0, 1.4),
        (18.6, 1.4),
        (19.4, 1.5),
        (20.6, 1.6),
        (21.7, 1.7),
        (22.6, 1.8),
        (24.6, 1.9),
        (25.6, 1.9),
        (26.4, 2.0),
        (26.6, 2.0),
        (27.0, 2.1),
    ],
    # Panjabi VBHp.
    "body_height_post": [
        (15.8, 1.2),
        (17.0, 1.2),
        (17.5, 1.2),
        (17.8, 1.2),
        (18.3, 1.3),
        (18.8, 1.3),
        (19.6, 1.4),
        (20.0, 1.4),
        (20.6, 1.5),
        (21.4, 1.6),
        (22.8, 1.7),
        (24.0, 1.8),
        (25.9, 1.9),
        (25.8, 1.9),
        (25.2, 1.9),
        (24.4, 1.9),
        (23.2, 1.9),
    ],
    # Wang 2012 (lumbar, superior endplate of vertebra = caudal endplate of disc
    # above: 0.7 mm mean); thoracic ESTIMATED (slightly flatter).
    "endplate_concavity": [(0.5, 0.35)] * 6 + [(0.6, 0.4)] * 6 + [(0.7, 0.5)] * 5,
    # Zindrick 1987 transverse isthmus width.
    "pedicle_width": [
        (7.9, 1.2),
        (7.0, 1.1),
        (5.6, 1.0),
        (4.5, 0.9),
        (4.7, 0.9),
        (4.9, 0.9),
        (5.0, 1.0),
        (5.3, 1.0),
        (5.9, 1.1),
        (6.4, 1.2),
        (7.5, 1.4),
        (7.8, 1.5),
        (8.7, 1.6),
        (8.9, 1.7),
        (10.3, 1.9),
        (12.9, 2.1),
        (18.0, 2.6),
    ],
    # Zindrick 1987 sagittal pedicle width (height).
    "pedicle_height": [
        (9.9, 1.3),
        (11.9, 1.3),
        (12.4, 1.3),
        (12.2, 1.3),
        (11.6, 1.3),
        (11.9, 1.3),
        (12.1, 1.3),
        (12.6, 1.4),
        (13.6, 1.5),
        (15.3, 1.6),
        (17.4, 1.7),
        (16.7, 1.7),
        (15.4, 1.7),
        (15.0, 1.6),
        (14.9, 1.6),
        (14.8, 1.7),
        (14.0, 1.9),
    ],
    # Zindrick 1987 transverse pedicle angle (+ medial convergence).
    "pedicle_transverse_angle": [
        (27.0, 5.0),
        (20.8, 5.0),
        (14.4, 4.5),
        (12.5, 4.0),
        (11.6, 4.0),
        (10.4, 4.0),
        (8.5, 4.0),
        (8.0, 4.0),
        (7.0, 4.0),
        (5.0, 4.0),
        (-1.0, 4.0),
        (-4.2, 4.5),
        (10.9, 4.0),
        (12.0, 4.0),
        (14.4, 4.0),
        (17.7, 4.5),
        (29.8, 5.5),
    ],
    # Zindrick 1987 sagittal pedicle angle (+ cephalad).
    "pedicle_sagittal_angle": [
        (14.9, 5.0),
        (17.5, 5.0),
        (15.5, 4.5),
        (14.6, 4.5),
        (14.6, 4.5),
        (14.0, 4.5),
        (13.6, 4.5),
        (13.5, 4.5),
        (13.3, 4.5),
        (12.8, 4.5),
        (12.3, 4.5),
        (11.6, 4.5),
        (2.4, 3.5),
        (2.0, 3.5),
        (1.4, 3.5),
        (0.6, 3.5),
        (-0.8, 3.5),
    ],
    # Panjabi SCW (interpedicular).
    "canal_width": [
        (21.0, 1.8),
        (18.6, 1.6),
        (17.4, 1.5),
        (16.6, 1.4),
        (16.5, 1.4),
        (16.3, 1.4),
        (16.4, 1.4),
        (16.6, 1.4),
        (16.9, 1.5),
        (17.4, 1.5),
        (19.0, 1.7),
        (21.4, 1.9),
        (22.8, 2.1),
        (22.9, 2.1),
        (23.5, 2.2),
        (24.3, 2.4),
        (26.6, 2.8),
    ],
    # Panjabi SCD (mid-sagittal).
    "canal_depth": [
        (14.5, 1.4),
        (15.0, 1.4),
        (15.2, 1.4),
        (15.3, 1.4),
        (15.4, 1.4),
        (15.5, 1.4),
        (15.6, 1.4),
        (15.7, 1.4),
        (15.9, 1.5),
        (16.3, 1.5),
        (17.0, 1.6),
        (17.5, 1.7),
        (18.8, 1.9),
        (18.0, 1.9),
        (17.4, 1.9),
        (17.6, 2.0),
        (18.2, 2.1),
    ],
    # Thoracic: Egwu 2019 / typical-thoracic caliper studies (~17 mm);
    # T1 and lumbar ESTIMATED.
    "lamina_height": [
        (13.5, 1.8),
        (15.5, 2.0),
        (16.5, 2.0),
        (17.0, 2.1),
        (17.2, 2.1),
        (17.4, 2.1),
        (17.6, 2.1),
        (18.0, 2.2),
        (18.5, 2.2),
        (19.0, 2.3),
        (19.5, 2.4),
        (20.5, 2.5),
        (23.0, 2.8),
        (23.5, 2.8),
        (22.5, 2.8),
        (20.5, 2.7),
        (18.0, 2.6),
    ],
    # Egwu 2019: T2 6.6 +- 1.16 ... T9 7.3 +- 1.24; others ESTIMATED.
    "lamina_thickness": [
        (6.2, 1.1),
        (6.6, 1.2),
        (6.7, 1.2),
        (6.8, 1.2),
        (6.9, 1.2),
        (7.0, 1.2),
        (7.1, 1.2),
        (7.2, 1.2),
        (7.3, 1.2),
        (7.2, 1.2),
        (7.0, 1.2),
        (6.8, 1.2),
        (6.5, 1.2),
        (6.5, 1.2),
        (6.6, 1.2),
        (7.0, 1.3),
        (7.5, 1.4),
    ],
    # Panjabi SPL (approximate).
    "spinous_length": [
        (47.0, 5.0),
        (47.0, 5.0),
        (46.0, 5.0),
        (46.0, 5.0),
        (45.0, 5.0),
        (45.0, 5.0),
        (44.0, 5.0),
        (43.0, 5.0),
        (41.0, 4.8),
        (38.0, 4.6),
        (35.0, 4.4),
        (33.0, 4.2),
        (33.0, 4.0),
        (34.0, 4.0),
        (34.0, 4.0),
        (32.0, 4.0),
        (28.0, 4.0),
    ],
    # ESTIMATED from Panjabi SPI trend (steepest mid-thoracic, near-horizontal lumbar).
    "spinous_inclination": [
        (25.0, 6.0),
        (35.0, 6.0),
        (45.0, 6.0),
        (50.0, 6.0),
        (55.0, 6.0),
        (60.0, 6.0),
        (62.0, 6.0),
        (60.0, 6.0),
        (55.0, 6.0),
        (45.0, 6.0),
        (35.0, 6.0),
        (25.0, 6.0),
        (15.0, 5.0),
        (12.0, 5.0),
        (10.0, 5.0),
        (10.0, 5.0),
        (12.0, 5.0),
    ],
    # Panjabi TPW (approximate).
    "transverse_width": [
        (75.0, 5.0),
        (70.0, 5.0),
        (66.0, 5.0),
        (64.0, 4.5),
        (63.0, 4.5),
        (63.0, 4.5),
        (62.0, 4.5),
        (61.0, 4.5),
        (60.0, 4.5),
        (57.0, 4.5),
        (50.0, 5.0),
        (45.0, 5.0),
        (68.0, 6.0),
        (74.0, 6.0),
        (80.0, 6.0),
        (77.0, 6.0),
        (80.0, 7.0),
    ],
    # ESTIMATED: roughly (TPW - width of the neural arch at the pedicles)/2.
    "transverse_length": [
        (22.0, 3.0),
        (21.0, 3.0),
        (20.0, 3.0),
        (19.5, 3.0),
        (19.0, 3.0),
        (19.0, 3.0),
        (18.5, 3.0),
        (18.0, 3.0),
        (17.0, 3.0),
        (15.0, 3.0),
        (11.0, 3.0),
        (8.0, 3.0),
        (15.0, 3.5),
        (18.0, 3.5),
        (22.0, 3.5),
        (19.0, 3.5),
        (17.0, 3.5),
    ],
    # Masharawi 2004 (converted to 0 = coronal): T1-T11 ~25-30 deg from frontal
    # plane; T12-L2 25.9-33.9 deg from mid-sagittal (=> ~56-64 from coronal);
    # L3-L5 40.4-56.3 deg from mid-sagittal (=> ~34-50 from coronal).
    "facet_transverse_angle": [
        (25.0, 7.0),
        (26.0, 7.0),
        (27.0, 7.0),
        (27.0, 7.0),
        (27.0, 7.0),
        (27.0, 7.0),
        (27.0, 7.0),
        (27.0, 7.0),
        (28.0, 7.0),
        (29.0, 8.0),
        (35.0, 12.0),
        (58.0, 12.0),
        (63.0, 8.0),
        (60.0, 8.0),
        (50.0, 8.0),
        (43.0, 8.0),
        (36.0, 9.0),
    ],
    # Thoracic facets ~65 deg to the disc plane (Panjabi 1993 / secondary
    # summary); lumbar near-vertical.  Lumbar values ESTIMATED.
    "facet_sagittal_angle": [
        (60.0, 6.0),
        (62.0, 6.0),
        (64.0, 6.0),
        (65.0, 6.0),
        (65.0, 6.0),
        (65.0, 6.0),
        (65.0, 6.0),
        (66.0, 6.0),
        (67.0, 6.0),
        (70.0, 6.0),
        (75.0, 6.0),
        (80.0, 6.0),
        (82.0, 5.0),
        (84.0, 5.0),
        (85.0, 5.0),
        (85.0, 5.0),
        (83.0, 5.0),
    ],
    # Thoracic ESTIMATED (4.5 -> 7.5 mm, T12/L1 8.5); lumbar = mean of the
    # mid-disc MRI heights of mri_disc_iran and mri_disc_nepal (L5 = L5/S1).
    "disc_height_below": [
        (4.5, 1.0),
        (4.5, 1.0),
        (4.6, 1.0),
        (4.8, 1.0),
        (5.0, 1.0),
        (5.2, 1.0),
        (5.5, 1.1),
        (5.8, 1.1),
        (6.2, 1.2),
        (6.6, 1.2),
        (7.0, 1.3),
        (8.5, 1.5),
        (8.9, 1.9),
        (10.4, 1.7),
        (11.5, 1.8),
        (12.9, 2.0),
        (12.0, 2.5),
    ],
}


def _build() -> dict[str, LevelMorphometry]:
    names = [f.name for f in fields(LevelMorphometry) if f.name != "level"]
    assert set(names) == set(_COLS), set(names) ^ set(_COLS)
    out: dict[str, LevelMorphometry] = {}
    for i, lev in enumerate(LEVELS):
        kw = {n: Stat(*_COLS[n][i]) for n in names}
        out[lev] = LevelMorphometry(level=lev, **kw)
    return out


MORPHOMETRY: dict[str, LevelMorphometry] = _build()

# ---------------------------------------------------------------------------
SOURCES: dict[str, str] = {
    "panjabi1991": "Panjabi MM, Takata K, Goel V, Federico D, Oxland T, Duranceau J, Krag M. "
    "Thoracic human vertebrae. Quantitative three-dimensional anatomy. "
    "Spine 1991;16(8):888-901. doi:10.1097/00007632-199108000-00006",
    "panjabi1992": "Panjabi MM, Goel V, Oxland T, Takata K, Duranceau J, Krag M, Price M. "
    "Human lumbar vertebrae. Quantitative three-dimensional anatomy. "
    "Spine 1992;17(3):299-306.",
    "panjabi1993": "Panjabi MM, Oxland T, Takata K, Goel V, Duranceau J, Krag M. "
    "Articular facets of the human spine. Quantitative three-dimensional anatomy. "
    "Spine 1993;18(10):1298-1310.",
    "zindrick1987": "Zindrick MR, Wiltse LL, Doornik A, et al. Analysis of the morphometric "
    "characteristics of the thoracic and lumbar pedicles. Spine 1987;12(2):160-166. "
    "doi:10.1097/00007632-198703000-00012",
    "kim1994": "Kim NH, Lee HM, Chung IH, Kim HJ, Kim SJ. Morphometric study of the pedicles "
    "of thoracic and lumbar vertebrae in Koreans. Spine 1994;19(12):1390-1394. "
    "(cross-check only; values not used numerically)",
    "zhou2000": "Zhou SH, McCarthy ID, McGregor AH, Coombs RRH, Hughes SPF. Geometrical "
    "dimensions of the lower lumbar vertebrae - analysis of data from digitised CT "
    "images. Eur Spine J 2000;9(3):242-248. (cross-check only)",
    "masharawi2004": "Masharawi Y, Rothschild B, Dar G, Peleg S, Robinson D, Been E, "
    "Hershkovitz I. Facet orientation in the thoracolumbar spine: "
    "three-dimensional anatomic and biomechanical analysis. "
    "Spine 2004;29(16):1755-1763.",
    "wang2012": "Wang Y, Battie MC, Videman T. A morphological study of lumbar vertebral "
    "endplates: radiographic, visual and digital measurements. "
    "Eur Spine J 2012;21(11):2316-2323. doi:10.1007/s00586-012-2415-8",
    "egwu2019": "Egwu OA, Okechukwu GN, Uzomba GC, Eze SO, Ezemagu UK. Typical thoracic "
    "vertebrae morphometry: a cadaveric study in Nigeria. "
    "J Anat Soc India 2019;68(2):110-118. doi:10.4103/JASI.JASI_8_19",
    "kaur2016": "Kaur K, Singh R, Prasath V, Magu S, Tanwar M. Computed tomographic-based "
    "morphometric study of thoracic spine and its relevance to anaesthetic and "
    "spinal surgical procedures. J Clin Orthop Trauma 2016;7(2):101-108. "
    "doi:10.1016/j.jcot.2015.12.002",
    "lumbar_ct_nz": "Int J Spine Surg (ijssurgery.com), CT morphometry of the lumbar spine in "
    "Maori and European New Zealanders, Table 6 (L5: VBAH 30.3+-1.9, "
    "VBPH 26.3+-1.9, VBSL 35.7+-3.5, PH 12.9, PW 16.1, VCL 15.6, VCW 28.2 mm). "
    "Authors/year not retrieved; used as an in-vivo CT sanity check.",
    "mri_disc_iran": "Measuring dimensions of lumbar intervertebral discs in normal subjects "
    "(MRI, 14 subjects aged 40-60). Anatomical Sciences Journal (Iran), "
    "anatomyjournal.ir; middle disc height L1/2..L5/S1 = 10.0+-1.89, "
    "11.59+-1.51, 12.45+-1.79, 13.82+-1.96, 12.99+-2.53 mm.",
    "mri_disc_nepal": "Morphometric study of lumbar intervertebral spaces (discs) by using MRI "
    "(106 scans, Nepal); middle height 7.89 mm (L1-2) to 11.96 mm (L4-5), "
    "11.10 mm (L5-S1).",
    "lumbar_alignment_627": "Lumbar sagittal alignment and range of motion in 627 asymptomatic "
    "volunteers (Asian Spine J 2019; PMC6680033): standing LL T12-S1 "
    "49.8+-11.2 deg, L4-S1 34.2+-8.3 deg.",
    "spine_secrets": "Devlin VJ (ed). Spine Secrets. Normal sagittal alignment: thoracic "
    "kyphosis 20-40 deg (T2-T12 30-50 deg), lumbar lordosis 45-70 deg "
    "(55-65 typical), thoracolumbar junction T10-L2 neutral.",
    "vialle2005": "Vialle R, Levassor N, Rillardon L, et al. Radiographic analysis of the "
    "sagittal alignment and balance of the spine in asymptomatic subjects. "
    "J Bone Joint Surg Am 2005;87(2):260-267. (values recalled, not retrieved: "
    "SS ~41+-8, PI ~55+-11, PT ~13+-6 deg)",
    "srs_scoliosis": "Scoliosis Research Society terminology: scoliosis = Cobb >= 10 deg; "
    "moderate ~25-45 deg (bracing range).",
    "aaro1981": "Aaro S, Dahlborn M. Estimation of vertebral rotation and the spinal and rib "
    "cage deformity in scoliosis by computer tomography. Spine 1981;6(5):460-467. "
    "(apical rotation range ESTIMATED from this literature, not retrieved)",
    "radclass_hu": "radclass.mudr.org 'Hounsfield units - scale of HU, CT numbers' (citing "
    "Buzug 2008, Heymsfield 2005, Prokop 2003): lung (inspiration) -850..-910, "
    "fat -50..-100, kidney 20..40, spleen 35..55, blood 45..65, liver 45..65, "
    "bone 700..3000 HU.",
    "prokop2003": "Prokop M, Galanski M. Spiral and Multislice Computed Tomography of the Body. Thieme, 2003.",
    "pickhardt2013": "Pickhardt PJ, Pooler BD, Lauder T, del Rio AM, Bruce RJ, Binkley N. "
    "Opportunistic screening for osteoporosis using abdominal CT scans "
    "obtained for other indications. Ann Intern Med 2013;158(8):588-595. "
    "(L1 trabecular HU; <=100 HU specific, <=160 HU sensitive for osteoporosis; "
    "recalled, not retrieved)",
    "hu_fracture_elderly": "Characteristics of vertebral CT Hounsfield units in elderly "
    "patients with acute vertebral fragility fractures (2020): L1 HU "
    "70.6+-23.4 (fracture) vs 101.5+-36.2 (age-matched controls).",
    "silva1994": "Silva MJ, Wang C, Keaveny TM, Hayes WC. Direct and computed tomography "
    "thickness measurements of the human, lumbar vertebral shell and endplate. "
    "Bone 1994;15(4):409-414.",
    "ritzel1997": "Ritzel H, Amling M, Posl M, Hahn M, Delling G. The thickness of human "
    "vertebral cortical bone and its changes in aging and osteoporosis. "
    "J Bone Miner Res 1997;12(1):89-95.",
    "vanderhouwen2010": "van der Houwen EB, Baron P, Veldhuizen AG, Burgerhof JGM, "
    "van Ooijen PMA, Verkerke GJ. Geometry of the intervertebral volume "
    "and vertebral endplates of the human spine. Ann Biomed Eng "
    "2010;38(1):33-40. doi:10.1007/s10439-009-9827-6",
    "palepu2019": "Palepu V, Rayaprolu SD, Nagaraja S. Differences in trabecular bone, "
    "cortical shell, and endplate microstructure across the lumbar spine. "
    "Int J Spine Surg 2019;13(4):361-370.",
    "segami2021": "Segami K, Espinoza Orias AA, Miyamoto H, Kanzaki K, An HS, Inoue N. "
    "Regional distribution of computed tomography attenuation across the "
    "lumbar endplate. PLoS One 2021 (PMID 34705863).",
}

FIELD_SOURCES: dict[str, str] = {
    "body_width": "panjabi1991 (T1-T12), panjabi1992 (L1-L5) EPWu; SD ~ SE*sqrt(12), rounded. "
    "Cross-check: egwu2019/kaur2016 typical-thoracic ~25-30 mm; zhou2000 CT. "
    "Cadaveric: in-vivo CT outlines run ~1 mm larger.",
    "body_depth": "panjabi1991/panjabi1992 EPDu; lumbar_ct_nz L5 superior length 35.7+-3.5 (CT) agrees with 35.0.",
    "body_height_ant": "panjabi1991/panjabi1992 VBHa; egwu2019 thoracic 16.9 (T2)-18.8 (T9). "
    "lumbar_ct_nz L5 VBAH 30.3 (CT, larger: living subjects/landmarks).",
    "body_height_post": "panjabi1991/panjabi1992 VBHp (posterior > anterior in thoracic = "
    "kyphotic wedging; reversed at L4-L5).",
    "endplate_concavity": "wang2012 (lumbar): mean concavity 0.7 mm for the endplate caudal to "
    "a disc (= a vertebra's SUPERIOR endplate), 1.5 mm for the cranial one "
    "(= INFERIOR endplate; see INFERIOR_ENDPLATE_CONCAVITY_MM). Thoracic "
    "ESTIMATED (0.5-0.6 mm); SDs ESTIMATED. palepu2019 micro-CT maximum "
    "depths are larger (maximum, not central mean).",
    "pedicle_width": "zindrick1987 (T1 7.9 widest thoracic, T4 4.5 narrowest, L1 8.7, L5 18.0 "
    "confirmed via secondary summary); intermediate levels transcribed/"
    "interpolated; kaur2016 CT T1 9.27+-1.01, T4 4.5+-0.93, T12 8.31+-1.83. "
    "SDs ESTIMATED (~15 %). lumbar_ct_nz L5 CT width 16.1.",
    "pedicle_height": "zindrick1987 (T1 9.9 narrowest, T11 17.4 widest, L1 15.4, L5 14.0 "
    "confirmed); intermediate levels transcribed/interpolated; SDs ESTIMATED.",
    "pedicle_transverse_angle": "zindrick1987 (T1 27, T12 -4.2, L1 10.9, L5 29.8 deg confirmed; "
    "~+5 deg/level in lumbar); intermediates interpolated. kaur2016 CT "
    "gives larger T1 (35.4) and T12 (-9.8). SDs ESTIMATED.",
    "pedicle_sagittal_angle": "zindrick1987 (T2 17.5 max, T12 11.6, L1 2.4, L5 -0.8 confirmed); "
    "T1, T3-T11, L2-L4 interpolated. Note the T12->L1 step partly "
    "reflects different reference lines in the thoracic vs lumbar "
    "series. SDs ESTIMATED.",
    "canal_width": "panjabi1991/panjabi1992 SCW (interpedicular), narrowest T4-T8. lumbar_ct_nz L5 VCW 28.2 (CT).",
    "canal_depth": "panjabi1991/panjabi1992 SCD. lumbar_ct_nz L5 VCL 15.6 (CT, smaller).",
    "lamina_height": "thoracic T2-T11: egwu2019-type caliper data (typical thoracic ~17 mm); "
    "T1 and T12-L5 ESTIMATED. Not reported by Panjabi.",
    "lamina_thickness": "egwu2019 (T2 6.60+-1.16, T9 7.30+-1.24, near-constant between); T1, T10-L5 ESTIMATED.",
    "spinous_length": "panjabi1991/panjabi1992 SPL, approximate (+-3 mm); SDs ESTIMATED. "
    "CAVEAT: body depth + canal depth + SPL gives ~82-86 mm AP for L1-L4, "
    "above the ~65-80 mm real-data span; SPL is measured from the canal, "
    "so a phantom should overlap it with the lamina (or scale ~0.85).",
    "spinous_inclination": "ESTIMATED from the qualitative trend in panjabi1991/1992 (SPI) "
    "and kaur2016: steepest (~60 deg) T5-T8, near-horizontal lumbar.",
    "transverse_width": "panjabi1991/panjabi1992 TPW, approximate (+-5 mm); T11-T12 small "
    "(rudimentary processes); L3 widest in lumbar. SDs ESTIMATED. "
    "Lumbar 68-80 mm matches the 55-80 mm real-data span.",
    "transverse_length": "ESTIMATED from TPW minus posterior-arch width, halved.",
    "facet_transverse_angle": "masharawi2004 (converted to 0 = coronal) with panjabi1993 trend; "
    "T11/T12 transitional and highly variable (large SD).",
    "facet_sagittal_angle": "panjabi1993 trend (thoracic facets ~65 deg to the disc plane); "
    "lumbar near-vertical 82-85 deg ESTIMATED.",
    "disc_height_below": "lumbar: mean of mri_disc_iran and mri_disc_nepal mid-disc heights "
    "(Nepal L2/3, L3/4 interpolated); SD from mri_disc_iran. Thoracic "
    "ESTIMATED 4.5-7 mm (cf. disc 20-33 % of column length, White & "
    "Panjabi); T12/L1 8.5 ESTIMATED. L5 value is the L5/S1 disc.",
}

INFERIOR_ENDPLATE_CONCAVITY_MM: Stat = Stat(1.5, 0.8)  # wang2012 mean; SD ESTIMATED

# ---------------------------------------------------------------------------
POSTURE: dict[str, Range] = {
    "lumbar_lordosis_L1_S1_deg": Range(40.0, 70.0),
    "lumbar_lordosis_L4_S1_deg": Range(26.0, 43.0),
    "thoracic_kyphosis_T4_T12_deg": Range(20.0, 45.0),
    "thoracolumbar_T10_L2_deg": Range(-5.0, 10.0),
    "sacral_slope_deg": Range(33.0, 50.0),
    "pelvic_incidence_deg": Range(44.0, 66.0),
    "pelvic_tilt_deg": Range(5.0, 20.0),
    "segmental_lordosis_deg": Range(0.0, 20.0),
    "scoliosis_cobb_deg": Range(10.0, 40.0),
    "apical_axial_rotation_deg": Range(5.0, 25.0),
}

POSTURE_SOURCES: dict[str, str] = {
    "lumbar_lordosis_L1_S1_deg": "spine_secrets (45-70); lumbar_alignment_627 (49.8+-11.2 standing, "
    "36.8+-13.2 supine -- CT is supine, so lower values are realistic)",
    "lumbar_lordosis_L4_S1_deg": "lumbar_alignment_627 (34.2+-8.3 standing)",
    "thoracic_kyphosis_T4_T12_deg": "spine_secrets (20-40 normal; 30-50 for T2-T12)",
    "thoracolumbar_T10_L2_deg": "spine_secrets (neutral)",
    "sacral_slope_deg": "vialle2005 (mean +- 1 SD, recalled)",
    "pelvic_incidence_deg": "vialle2005 (mean +- 1 SD, recalled)",
    "pelvic_tilt_deg": "vialle2005 (recalled)",
    "segmental_lordosis_deg": "lumbar_alignment_627 (increases caudally; L1/2 smallest, L5/S1 "
    "largest); range ESTIMATED",
    "scoliosis_cobb_deg": "srs_scoliosis (>=10 deg defines scoliosis; mild-moderate up to ~40)",
    "apical_axial_rotation_deg": "aaro1981 (ESTIMATED for mild-moderate curves)",
}

# ---------------------------------------------------------------------------
TISSUE_HU: dict[str, Range] = {
    "fat_subcutaneous": Range(-120.0, -80.0),
    "fat_visceral": Range(-110.0, -70.0),
    "muscle": Range(30.0, 60.0),
    "blood_aorta_unenhanced": Range(35.0, 60.0),
    "liver": Range(45.0, 65.0),
    "spleen": Range(35.0, 55.0),
    "kidney": Range(20.0, 40.0),
    "lung_inflated": Range(-910.0, -850.0),
    "bowel_gas": Range(-1000.0, -900.0),
    "air": Range(-1010.0, -990.0),
    "disc_annulus": Range(70.0, 110.0),
    "disc_nucleus": Range(40.0, 80.0),
    "csf": Range(0.0, 15.0),
    "spinal_cord": Range(30.0, 45.0),
    "trabecular_young": Range(200.0, 300.0),
    "trabecular_middle": Range(140.0, 200.0),
    "trabecular_osteoporotic": Range(50.0, 110.0),
    "cortical_bone": Range(1000.0, 1800.0),
    "endplate_sclerosis": Range(500.0, 1000.0),
    "osteophyte": Range(300.0, 900.0),
    "titanium_screw": Range(3000.0, 8000.0),
}

TISSUE_SOURCES: dict[str, str] = {
    "fat_subcutaneous": "radclass_hu, prokop2003 (fat -50..-100; mediastinal/subcutaneous fat "
    "rarely below -130); subcutaneous slightly lower than visceral ESTIMATED",
    "fat_visceral": "radclass_hu, prokop2003",
    "muscle": "prokop2003; radclass_hu (soft tissue); ESTIMATED narrowing to 30..60",
    "blood_aorta_unenhanced": "radclass_hu (45..65), prokop2003; lower bound for anaemia ESTIMATED",
    "liver": "radclass_hu",
    "spleen": "radclass_hu",
    "kidney": "radclass_hu",
    "lung_inflated": "radclass_hu (inspiration)",
    "bowel_gas": "prokop2003 (ESTIMATED: gas plus partial volume)",
    "air": "definition of the HU scale (-1000)",
    "disc_annulus": "prokop2003 (ESTIMATED)",
    "disc_nucleus": "prokop2003 (ESTIMATED)",
    "csf": "prokop2003 (water-like, 0..15)",
    "spinal_cord": "prokop2003 (ESTIMATED, grey/white-matter-like 30..45)",
    "trabecular_young": "pickhardt2013 (age trend of L1 HU, recalled)",
    "trabecular_middle": "pickhardt2013 (recalled); 160 HU = sensitive osteoporosis threshold",
    "trabecular_osteoporotic": "pickhardt2013 (<=100 HU), hu_fracture_elderly (70.6+-23.4 "
    "fracture, 101.5+-36.2 controls)",
    "cortical_bone": "radclass_hu (bone 700..3000); thin vertebral shell appears much lower "
    "(300-600 HU) through partial volume at 0.5-1 mm voxels",
    "endplate_sclerosis": "segami2021 (endplate HU exceeds trabecular, peripheral > central); range ESTIMATED",
    "osteophyte": "ESTIMATED (mixed cortical/cancellous bone)",
    "titanium_screw": "ESTIMATED; clipped to 3071 HU on standard 12-bit scanners, with streak/beam-hardening artefacts",
}

CORTICAL_THICKNESS_MM: Range = Range(0.2, 0.6)
"""Vertebral body cortical shell: silva1994 (~0.35-0.4 mm, direct), ritzel1997
(~0.2-0.3 mm in the elderly/osteoporotic), palepu2019 (micro-CT, L1 thinnest);
summarised in vanderhouwen2010 Table 1."""


# ---------------------------------------------------------------------------
_TABLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("body_width", "Body W"),
    ("body_depth", "Body D"),
    ("body_height_ant", "H ant"),
    ("body_height_post", "H post"),
    ("pedicle_width", "Ped W"),
    ("pedicle_height", "Ped H"),
    ("pedicle_transverse_angle", "Ped TA (deg)"),
    ("canal_width", "Canal W"),
    ("canal_depth", "Canal D"),
    ("spinous_length", "SP len"),
    ("transverse_width", "TP width"),
)


def table_markdown() -> str:
    """Markdown table (mean +- SD) of the main per-level fields, T1..L5."""
    head = "| Level | " + " | ".join(t for _, t in _TABLE_FIELDS) + " |"
    sep = "|" + "---|" * (len(_TABLE_FIELDS) + 1)
    rows = [head, sep]
    for lev in LEVELS:
        m = MORPHOMETRY[lev]
        cells = []
        for name, _ in _TABLE_FIELDS:
            s: Stat = getattr(m, name)
            cells.append(f"{s.mean:.1f} ± {s.sd:.1f}")
        rows.append(f"| {lev} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
