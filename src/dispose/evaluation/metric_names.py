"""Names of the metrics ``dispose eval`` knows (no heavy imports: the CLI parser reads these)."""

FRAME_METRICS = ("ssim", "psnr", "l1", "lpips", "l1_disco")
VIDEO_SET_METRICS = ("fid_vid", "fvd", "cd_fvd", "fid_vid_r3d")
VBENCH_METRICS = ("temporal_flickering", "subject_consistency", "background_consistency", "motion_smoothness",
                  "dynamic_degree", "dynamic_degree_dis", "imaging_quality", "aesthetic_quality")
ALL_METRICS = FRAME_METRICS + VIDEO_SET_METRICS + VBENCH_METRICS
