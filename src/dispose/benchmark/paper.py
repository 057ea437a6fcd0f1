"""The paper's figures the benchmarks print beside ours (DisPose, ICLR 2025).

Table 7 (App. G, 576x1024 videos): trainable parameters in "MB" (= parameter count / 2^20, checked against
the networks' counts: ``dispose models``) and inference time in s/frame; the paper gives no DisPose row on
MusePose.  Table 1 (TikTok sequences 335-340: VBench x100, FID-FVD, FVD, CD-FVD) and Table 6 (SSIM, PSNR,
LPIPS, L1 on the same set), keyed by the metric names of :mod:`dispose.evaluation`.
"""

from __future__ import annotations

#: base -> {"base" | "dispose": (row label, trainable Mi, s/frame)}; None where the paper has no figure.
TABLE7 = {
    "mimicmotion": {"base": ("MimicMotion", 1454.19, 1.61), "dispose": ("MimicMotion+Ours", 653.40, 2.36)},
    "musepose": {"base": ("MusePose", 2072.64, 3.37), "dispose": ("MusePose+Ours", None, None)},
}
_T1 = (
    "temporal_flickering",
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "imaging_quality",
    "fid_vid",
    "fvd",
    "cd_fvd",
)
#: base -> {"base" | "dispose": {metric: value as printed (VBench x100)}}
TABLE1 = {
    "musepose": {
        "base": dict(zip(_T1, (97.02, 95.27, 95.16, 98.45, 27.31, 71.56, 11.48, 866.36, 626.59))),
        "dispose": dict(zip(_T1, (97.63, 95.70, 95.64, 98.51, 31.34, 71.89, 11.26, 764.00, 622.64))),
    },
    "mimicmotion": {
        "base": dict(zip(_T1, (97.56, 94.95, 95.36, 98.67, 28.42, 68.42, 10.50, 598.41, 621.90))),
        "dispose": dict(zip(_T1, (97.73, 95.72, 95.90, 98.89, 29.51, 71.33, 10.24, 466.93, 603.27))),
    },
}
_T6 = ("ssim", "psnr", "lpips", "l1_disco")  # the paper's L1 is DisCo's scale
TABLE6 = {
    "musepose": {
        "base": dict(zip(_T6, (0.788, 19.14, 0.263, 2.46e-05))),
        "dispose": dict(zip(_T6, (0.811, 19.36, 0.238, 2.26e-05))),
    },
    "mimicmotion": {
        "base": dict(zip(_T6, (0.749, 18.32, 0.272, 2.71e-05))),
        "dispose": dict(zip(_T6, (0.781, 19.58, 0.242, 2.42e-05))),
    },
}
