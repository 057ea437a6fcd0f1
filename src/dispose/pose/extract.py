"""From a reference image and driving frames to the poses DisPose draws and tracks.

:func:`extract_poses` detects the reference person and the people of every driving frame, keeps the first
person of each frame (the detector's best, see :mod:`dispose.pose.detectors`), aligns them to the
reference (:mod:`dispose.pose.alignment`) and returns them normalised to the reference (generation) frame,
as the release's ``get_video_pose`` does before drawing.

:func:`stream_poses` does the driving part for frames that arrive one at a time (a video decoded as it is
read, :class:`~dispose.media.video.VideoFrames`): through
:meth:`~dispose.pose.detectors.PoseDetector.detect_stream`, only the poses are kept, so memory does not
grow with the video's length; :func:`extract_poses` goes through it too.

:func:`align_sequence` does the same for poses that come from a file (``--poses``,
:func:`dispose.pose.json_poses.load_pose_file`) instead of a detector.

Frames without a person are filled (the release draws an empty or partial skeleton for them): each takes
the aligned pose of the closest earlier frame that has one; frames before the first detection take the
first detected pose.  The number of filled frames is reported; a video where nobody is found at all, or a
reference without a person, is a :class:`~dispose.errors.UserError`.

Difference from the release: only the first person of each frame is kept (and so drawn).  The release
draws every detected person into the skeleton images while its motion guidance and alignment follow the
first one; bystanders in a driving video therefore no longer appear as extra skeletons.  Every person is
still available from :meth:`~dispose.pose.detectors.PoseDetector.detect_people`, and
:func:`~dispose.pose.drawing.draw_pose` draws a list of people exactly as the release does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dispose.errors import UserError
from dispose.pose.alignment import ALIGN_MODES, LinearFit, align_people
from dispose.pose.detectors import PoseDetector
from dispose.pose.keypoints import Pose, PoseSequence


@dataclass
class PoseExtraction:
    """Poses of one reference / driving pair, in the reference frame."""

    reference: Pose | None  # None: no reference (alignment "none" to a frame of the reference size)
    driving: PoseSequence  # N poses aligned and normalised to the reference frame
    filled: int  # driving frames with nobody detected, filled with a neighbour's pose
    filled_frames: list[int] = field(default_factory=list)  # their indices
    fit: LinearFit | None = None  # the linear map used ("global" fit or the "none" frame map)


def fill_missing(poses: Sequence[Pose | None]) -> tuple[list[Pose], list[int]]:
    """Replace each ``None`` by the last pose before it (the first pose for leading ``None``s).

    Returns the filled list and the indices that were filled.  Raises ``ValueError`` when all are ``None``.
    """
    first = next((pose for pose in poses if pose is not None), None)
    if first is None:
        raise ValueError("no pose to fill from")
    filled, indices, last = [], [], first
    for index, pose in enumerate(poses):
        if pose is None:
            indices.append(index)
        else:
            last = pose
        filled.append(last)
    return filled, indices


def load_reference(path: str | Path, resolution: int, detector: PoseDetector) -> tuple[np.ndarray, Pose]:
    """The reference image resized and centre-cropped to the generation size (uint8 RGB, see
    :mod:`dispose.media.geometry`) and its first person's pose.  A :class:`~dispose.errors.UserError`
    names the file when it cannot be read or shows nobody."""
    from dispose.media.geometry import resize_and_crop, target_size
    from dispose.media.image import load_image

    image = load_image(path)
    frame = resize_and_crop(image, target_size(image.shape[1], image.shape[0], resolution))
    people = detector.detect_people([frame], progress=False)[0]
    if not people:
        raise UserError(f"no person found in the reference image {path} by {detector.name}; use an image "
                        "showing one person, with the body visible")
    return frame, people[0]


def extract_poses(reference: np.ndarray, frames: np.ndarray | Sequence[np.ndarray], detector: PoseDetector, *,
                  align: str = "global", progress: bool = True, fps: float | None = None,
                  reference_pose: Pose | None = None) -> PoseExtraction:
    """Reference pose and aligned driving poses (module docstring).

    ``reference`` is the reference image already at the generation size (uint8 RGB); ``frames`` are the
    driving frames at their own size.  ``reference_pose`` skips detection on the reference (e.g. a pose
    read from JSON, normalised to ``reference``).  ``fps`` is stored on the returned sequence.
    """
    if align not in ALIGN_MODES:
        raise UserError(f"unknown alignment {align!r}; choose one of {', '.join(ALIGN_MODES)}")
    if len(frames) == 0:
        raise UserError("no driving frame to extract poses from")
    ref_h, ref_w = reference.shape[:2]
    if reference_pose is None:
        found = detector.detect_people([reference], progress=False)[0]
        if not found:
            raise UserError(f"no person found in the reference image by {detector.name}; "
                            "use an image showing one person, with the body visible")
        reference_pose = found[0]
    return stream_poses(reference_pose, frames, detector, (ref_w, ref_h), align=align, fps=fps,
                        progress=progress, total=len(frames))


def stream_poses(reference_pose: Pose | None, frames: Iterable[np.ndarray], detector: PoseDetector,
                 reference_size: tuple[int, int], *, align: str = "global", fps: float | None = None,
                 progress: bool = False, total: int | None = None) -> PoseExtraction:
    """Driving poses of ``frames`` (any iterable of uint8 RGB frames of one size, read once) aligned to
    ``reference_pose`` and normalised to the reference frame of ``reference_size = (W, H)``, as
    :func:`extract_poses`.  Frames are detected as they arrive
    (:meth:`~dispose.pose.detectors.PoseDetector.detect_stream`) and only their people are kept.  ``total``
    (the expected frame count, if known) sizes the progress bar."""
    if align not in ALIGN_MODES:
        raise UserError(f"unknown alignment {align!r}; choose one of {', '.join(ALIGN_MODES)}")
    frame_size: list[tuple[int, int]] = []

    def noting_size(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            if not frame_size:
                frame_size.append((np.shape(frame)[1], np.shape(frame)[0]))
            yield frame

    counted = tqdm(noting_size(frames), total=total, desc="poses", unit="frame", disable=not progress)
    people = list(detector.detect_stream(counted))
    if not people:
        raise UserError("no driving frame to extract poses from")
    if not any(people):
        raise UserError(f"no person found in any of the {len(people)} driving frames by {detector.name}")
    return align_and_fill(reference_pose, people, reference_size, frame_size[0], align, fps)


def align_sequence(reference_pose: Pose | None, driving: PoseSequence, reference_size: tuple[int, int], *,
                   align: str = "global") -> PoseExtraction:
    """Poses read from a file (``driving``, normalised to its ``width`` x ``height`` frames) aligned to
    ``reference_pose`` and normalised to the reference frame of ``reference_size = (W, H)``, as
    :func:`extract_poses` does with detected poses; frames without a person are filled the same way.
    ``align="none"`` needs no reference pose (the frames are resized and cropped to ``reference_size``)."""
    people = [[pose] if pose.has_person else [] for pose in driving.poses]
    if not any(people):
        raise UserError(f"the {len(driving)} poses given hold no person (no visible body keypoint)")
    return align_and_fill(reference_pose, people, reference_size, (driving.width, driving.height), align,
                          driving.fps)


def align_and_fill(reference_pose: Pose | None, people: Sequence[Sequence[Pose]],
                   reference_size: tuple[int, int], frame_size: tuple[int, int], align: str = "global",
                   fps: float | None = None) -> PoseExtraction:
    """The first person of each frame of ``people`` (every person of every ``frame_size`` frame, normalised)
    aligned to ``reference_pose`` (:func:`~dispose.pose.alignment.align_people`), empty frames filled."""
    aligned, fit = align_people(reference_pose, people, reference_size, frame_size, align)
    poses, filled = fill_missing(aligned)
    return PoseExtraction(reference=reference_pose, driving=PoseSequence(poses, *reference_size, fps),
                          filled=len(filled), filled_frames=filled, fit=fit)
