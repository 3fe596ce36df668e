// State model of the MotionStream track editor: tracks, anchors, region drags, selection, undo/redo
// and the `motionstream-tracks` widget JSON. Pure module (no DOM, no ComfyUI) so node can unit-test it.
// The schema and its rules are those of motionstream_core/motion/formats/widget_json.py (and
// region_drags.py); the region grid preview mirrors motionstream_core/motion/drag_control.py.

export const WIDGET_FORMAT = "motionstream-tracks";
// The newest version read; a document without region drags is written as version 1.
export const WIDGET_VERSION = 2;
export const POINT_TRACKS_VERSION = 1;
export const REGIONS_VERSION = 2;
// Region drags: handles that move a grid of tracks (see region_drags.py).
export const REGION_KINDS = Object.freeze(["path", "live", "anchor"]);
export const MAX_REGIONS = 64;
export const DEFAULT_RADIUS = 0.15;
export const MAX_RADIUS = 2;
export const DEFAULT_REGION_GRID = 50;
export const MAX_REGION_GRID = 64;

/**
 * The grid a frame gets when the document names none (as default_grid_size in drag_control.py):
 * one track per 16 pixels of the shorter side, from 4 to 50 per side.
 */
export function defaultRegionGrid(width, height) {
  return Math.max(4, Math.min(DEFAULT_REGION_GRID, Math.round(Math.min(width, height) / 16)));
}
export const DEFAULT_CLIP = Object.freeze({ width: 832, height: 480, fps: 16, duration: 5 });
export const MAX_TRACK_ID = 2 ** 24 - 1;
export const MAX_TRACKS = 10_000;
export const MAX_FRAMES = 10_000;
export const MAX_TRACK_POINTS = 2 ** 24;
export const MAX_FRAME_SIZE = 16_384;
export const MAX_FPS = 1000;
// Points may leave the frame by one frame size.
export const MIN_COORDINATE = -1;
export const MAX_COORDINATE = 2;
// Keyframes closer than this are merged; keeps times distinct after rounding to 4 decimals.
export const MIN_KEYFRAME_GAP = 0.001;
export const DEFAULT_HISTORY_LIMIT = 100;
// Largest deviation (normalised units) allowed when a drag is reduced to keyframes.
export const DEFAULT_SIMPLIFY_TOLERANCE = 0.004;

const DECIMALS = 4;
const SAME_TIME_EPSILON = 1e-6;

export function roundValue(value) {
  const scale = 10 ** DECIMALS;
  return Math.round(value * scale) / scale + 0; // + 0 turns -0 into 0
}

function clampCoordinate(value) {
  return Math.min(MAX_COORDINATE, Math.max(MIN_COORDINATE, value));
}

function makeKeyframe(t, x, y, visible = true) {
  const keyframe = { t: roundValue(t), x: roundValue(clampCoordinate(x)), y: roundValue(clampCoordinate(y)) };
  if (visible === false) keyframe.visible = false;
  return Object.freeze(keyframe);
}

// A track, or a region handle when `region` ({kind, radius}) is given; both share ids, selection and history.
function makeTrack(id, isStatic, keyframes, region = null) {
  const track = { id, static: isStatic, keyframes: Object.freeze(keyframes) };
  if (region) track.region = Object.freeze({ kind: region.kind, radius: region.radius });
  return Object.freeze(track);
}

// The same track with other keyframes (keeps static and region).
function withKeyframes(track, keyframes) {
  return makeTrack(track.id, track.static, keyframes, track.region ?? null);
}

function checkRadius(radius) {
  if (!(typeof radius === "number" && radius > 0 && radius <= MAX_RADIUS)) {
    throw new Error(`radius must be in (0, ${MAX_RADIUS}], got ${describe(radius)}`);
  }
  return radius;
}

function checkKeyframeGaps(keyframes, trackId) {
  for (let index = 1; index < keyframes.length; index += 1) {
    if (keyframes[index].t - keyframes[index - 1].t < MIN_KEYFRAME_GAP - SAME_TIME_EPSILON) {
      throw new Error(`track ${trackId}: keyframes would be closer than ${MIN_KEYFRAME_GAP * 1000} ms`);
    }
  }
}

// ---------------------------------------------------------------------------
// Drag samples -> keyframes
// ---------------------------------------------------------------------------

// Distance of `point` from where the straight, constant-speed motion a -> b is at point.t,
// which is exactly the error the importer's linear interpolation would make.
function timedDeviation(point, a, b) {
  const span = b.t - a.t;
  const weight = span > 0 ? (point.t - a.t) / span : 0;
  const x = a.x + (b.x - a.x) * weight;
  const y = a.y + (b.y - a.y) * weight;
  return Math.hypot(point.x - x, point.y - y);
}

/**
 * Reduce timestamped samples ({t seconds, x, y}) to the fewest samples whose piecewise linear
 * motion stays within `tolerance` of every sample (Douglas-Peucker on position at time t).
 */
export function simplifySamples(samples, tolerance = DEFAULT_SIMPLIFY_TOLERANCE) {
  if (samples.length <= 2) return samples.slice();
  const keep = new Array(samples.length).fill(false);
  keep[0] = keep[samples.length - 1] = true;
  const pending = [[0, samples.length - 1]];
  while (pending.length) {
    const [first, last] = pending.pop();
    let worstIndex = -1;
    let worstDeviation = tolerance;
    for (let index = first + 1; index < last; index += 1) {
      const deviation = timedDeviation(samples[index], samples[first], samples[last]);
      if (deviation > worstDeviation) {
        worstDeviation = deviation;
        worstIndex = index;
      }
    }
    if (worstIndex >= 0) {
      keep[worstIndex] = true;
      pending.push([first, worstIndex], [worstIndex, last]);
    }
  }
  return samples.filter((_, index) => keep[index]);
}

// Drop the hold before the pointer starts moving and the pause before it is released: they are
// handling, not motion, and would keep the point still at the start or end of the track.
function trimHolds(points, tolerance) {
  const still = (point, reference) => Math.hypot(point.x - reference.x, point.y - reference.y) <= tolerance;
  let first = 0;
  while (first < points.length - 1 && still(points[first + 1], points[0])) first += 1;
  let last = points.length - 1;
  while (last > first + 1 && still(points[last - 1], points[points.length - 1])) last -= 1;
  return points.slice(first, last + 1);
}

/**
 * Keyframes of a drag: the drag's own pacing, stretched over [start, start + duration].
 * A drag recorded too fast to have usable timestamps is paced evenly instead.
 */
export function keyframesFromDrag(samples, { start, duration, tolerance = DEFAULT_SIMPLIFY_TOLERANCE }) {
  const finite = samples
    .filter((sample) => [sample.t, sample.x, sample.y].every(Number.isFinite))
    .map((sample) => ({ t: sample.t, x: sample.x, y: sample.y }));
  if (finite.length < 2) throw new Error("a drag needs at least two pointer samples");
  let points = trimHolds(finite, tolerance);
  if (points.length < 2) points = [finite[0], finite[finite.length - 1]]; // the pointer never moved
  if (!(Number.isFinite(start) && start >= 0)) throw new Error(`track start must be >= 0, got ${start}`);
  if (!(Number.isFinite(duration) && duration >= MIN_KEYFRAME_GAP)) {
    throw new Error(`track duration must be at least ${MIN_KEYFRAME_GAP} s, got ${duration}`);
  }
  const origin = points[0].t;
  let span = points[points.length - 1].t - origin;
  const monotonic = points.every((point, index) => index === 0 || point.t >= points[index - 1].t);
  if (!monotonic || span < MIN_KEYFRAME_GAP) {
    points.forEach((point, index) => (point.t = index));
    span = points.length - 1;
  } else {
    points.forEach((point) => (point.t -= origin));
  }
  const simplified = simplifySamples(points, tolerance);
  const scale = duration / span;
  const keyframes = [];
  for (const point of simplified) {
    const keyframe = makeKeyframe(start + point.t * scale, point.x, point.y);
    const previous = keyframes[keyframes.length - 1];
    if (previous && keyframe.t - previous.t < MIN_KEYFRAME_GAP) {
      if (keyframes.length === 1) continue; // keep the drag's start
      keyframes.pop(); // the later sample wins so the drag's end is kept
    }
    keyframes.push(keyframe);
  }
  return keyframes;
}

/**
 * Keyframes of a drag made while a stream runs: the pointer's own pacing in real time, from
 * `start` (the stream's clock when the drag began), so one second of dragging is one second of video.
 * Unlike a drawn drag, holds are kept: they are time the stream spends with the region held still.
 */
export function keyframesFromLiveDrag(samples, { start, tolerance = DEFAULT_SIMPLIFY_TOLERANCE }) {
  if (!(Number.isFinite(start) && start >= 0)) throw new Error(`a live drag's start must be >= 0, got ${start}`);
  const finite = samples.filter((sample) => [sample.t, sample.x, sample.y].every(Number.isFinite));
  if (finite.length < 1) throw new Error("a drag needs at least one pointer sample");
  const origin = finite[0].t;
  const points = [];
  for (const sample of finite) {
    const t = Math.max(sample.t - origin, points.length ? points[points.length - 1].t : 0); // never back in time
    points.push({ t, x: sample.x, y: sample.y });
  }
  const keyframes = [];
  for (const point of simplifySamples(points, tolerance)) {
    const keyframe = makeKeyframe(start + point.t, point.x, point.y);
    const previous = keyframes[keyframes.length - 1];
    if (previous && keyframe.t - previous.t < MIN_KEYFRAME_GAP) {
      if (keyframes.length === 1) continue; // keep the grab point
      keyframes.pop();
    }
    keyframes.push(keyframe);
  }
  return keyframes;
}

/**
 * Where a region handle is at time t: its grab point until its first keyframe, linear in between,
 * where it was dropped after the last one (the region stays moved). Returns {x, y}.
 */
export function regionHandleAt(track, t) {
  const keyframes = track.keyframes;
  const first = keyframes[0];
  const last = keyframes[keyframes.length - 1];
  if (t <= first.t) return { x: first.x, y: first.y };
  if (t >= last.t) return { x: last.x, y: last.y };
  let index = 0;
  while (index < keyframes.length - 1 && keyframes[index + 1].t < t) index += 1;
  const from = keyframes[index];
  const to = keyframes[index + 1];
  const weight = to.t > from.t ? (t - from.t) / (to.t - from.t) : 1;
  return { x: from.x + (to.x - from.x) * weight, y: from.y + (to.y - from.y) * weight };
}

/**
 * Where a track is at time t, with the importer's rules: invisible before its first keyframe,
 * linear in between (visibility of the earlier keyframe), after the last keyframe a moving track
 * is invisible and a static one holds. Returns {x, y, visible} or null when not shown.
 */
export function positionAt(track, t) {
  const keyframes = track.keyframes;
  const first = keyframes[0];
  const last = keyframes[keyframes.length - 1];
  if (t < first.t - SAME_TIME_EPSILON) return null;
  if (t > last.t + SAME_TIME_EPSILON) {
    return track.static ? { x: last.x, y: last.y, visible: last.visible !== false } : null;
  }
  let index = 0;
  while (index < keyframes.length - 1 && keyframes[index + 1].t <= t + SAME_TIME_EPSILON) index += 1;
  const from = keyframes[index];
  const to = keyframes[Math.min(index + 1, keyframes.length - 1)];
  const weight = to.t > from.t ? Math.min(1, Math.max(0, (t - from.t) / (to.t - from.t))) : 0;
  return {
    x: from.x + (to.x - from.x) * weight,
    y: from.y + (to.y - from.y) * weight,
    visible: from.visible !== false,
  };
}

// ---------------------------------------------------------------------------
// Widget JSON validation
// ---------------------------------------------------------------------------

function describe(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length <= 40 ? text : `${text.slice(0, 37)}...`;
}

function readNumber(value, what) {
  if (typeof value !== "number") throw new Error(`${what} must be a number, got ${describe(value)}`);
  if (!Number.isFinite(value)) throw new Error(`${what} must be finite, got ${value}`);
  return value;
}

function readInteger(value, what, low, high) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new Error(`${what} must be an integer, got ${describe(value)}`);
  }
  if (value < low || value > high) throw new Error(`${what} must be in [${low}, ${high}], got ${value}`);
  return value;
}

function readBoolean(value, what) {
  if (typeof value !== "boolean") throw new Error(`${what} must be true or false, got ${describe(value)}`);
  return value;
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function keyframeList(raw, owner) {
  if (!Array.isArray(raw.keyframes) || raw.keyframes.length === 0) {
    throw new Error(`${owner} needs a non-empty 'keyframes' list`);
  }
  return raw.keyframes;
}

// t in seconds, x and y normalised and at most the margin outside the frame (as the Python reader checks).
function keyframePoint(keyframe, where) {
  if (!isPlainObject(keyframe)) throw new Error(`${where} must be an object, got ${describe(keyframe)}`);
  const t = readNumber(keyframe.t, `'t' of ${where}`);
  if (t < 0) throw new Error(`'t' of ${where} must not be negative, got ${t}`);
  const x = readNumber(keyframe.x, `'x' of ${where}`);
  const y = readNumber(keyframe.y, `'y' of ${where}`);
  if ([x, y].some((value) => value < MIN_COORDINATE || value > MAX_COORDINATE)) {
    throw new Error(
      `${where} at (${x}, ${y}) lies far outside the frame; ` +
        `normalised coordinates must be in [${MIN_COORDINATE}, ${MAX_COORDINATE}]`,
    );
  }
  return { t, x, y };
}

function parseTrack(raw, index) {
  if (!isPlainObject(raw)) throw new Error(`track ${index} must be an object, got ${describe(raw)}`);
  const id = readInteger(raw.id, `id of track ${index}`, 0, MAX_TRACK_ID);
  const isStatic = readBoolean(raw.static ?? false, `'static' of track ${id}`);
  const keyframes = keyframeList(raw, `track ${id}`).map((keyframe, number) => {
    const where = `keyframe ${number} of track ${id}`;
    const { t, x, y } = keyframePoint(keyframe, where);
    const visible = readBoolean(keyframe.visible ?? true, `'visible' of ${where}`);
    return { t, x, y, visible };
  });
  keyframes.sort((a, b) => a.t - b.t);
  for (let number = 1; number < keyframes.length; number += 1) {
    if (keyframes[number].t - keyframes[number - 1].t < SAME_TIME_EPSILON) {
      throw new Error(`track ${id} has two keyframes at the same time`);
    }
  }
  if (isStatic && keyframes.some((keyframe) => keyframe.x !== keyframes[0].x || keyframe.y !== keyframes[0].y)) {
    throw new Error(`static track ${id} must not move (all keyframes need the same x and y)`);
  }
  return { id, static: isStatic, keyframes };
}

function parseRegion(raw, index) {
  if (!isPlainObject(raw)) throw new Error(`region ${index} must be an object, got ${describe(raw)}`);
  const id = readInteger(raw.id, `id of region ${index}`, 0, MAX_TRACK_ID);
  if (!REGION_KINDS.includes(raw.kind)) {
    throw new Error(`'kind' of region ${id} must be one of ${REGION_KINDS.join(", ")}; got ${describe(raw.kind)}`);
  }
  const radius = readNumber(raw.radius, `'radius' of region ${id}`);
  if (!(radius > 0 && radius <= MAX_RADIUS)) throw new Error(`'radius' of region ${id} must be in (0, ${MAX_RADIUS}], got ${radius}`);
  const keyframes = keyframeList(raw, `region ${id}`).map((keyframe, number) => {
    const where = `keyframe ${number} of region ${id}`;
    const { t, x, y } = keyframePoint(keyframe, where);
    return { t, x, y, visible: true };
  });
  keyframes.sort((a, b) => a.t - b.t);
  for (let number = 1; number < keyframes.length; number += 1) {
    if (keyframes[number].t - keyframes[number - 1].t < SAME_TIME_EPSILON) {
      throw new Error(`region ${id} has two keyframes at the same time`);
    }
  }
  const isAnchor = raw.kind === "anchor";
  if (isAnchor && keyframes.some((keyframe) => keyframe.x !== keyframes[0].x || keyframe.y !== keyframes[0].y)) {
    throw new Error(`anchor region ${id} must not move (all keyframes need the same x and y)`);
  }
  return { id, static: isAnchor, keyframes, region: { kind: raw.kind, radius } };
}

/**
 * Validate a widget document (JSON text or parsed object) and return
 * {width, height, fps, duration, regionGrid, tracks}; region drags (version 2) are among `tracks`,
 * with a `region` ({kind, radius}); regionGrid is the document's region_grid or null (the default
 * for the frame size). Throws an Error naming the first problem.
 * Unlike the Python importer an empty track list is accepted: it is what an empty editor holds.
 */
export function parseTracksDocument(source) {
  let document = source;
  if (typeof source === "string") {
    if (!source.trim()) throw new Error("widget JSON is empty");
    try {
      document = JSON.parse(source);
    } catch (error) {
      throw new Error(`widget JSON is not valid JSON: ${error.message}`);
    }
  }
  if (!isPlainObject(document)) throw new Error(`widget JSON must be an object, got ${describe(document)}`);
  if (document.format !== WIDGET_FORMAT) {
    throw new Error(`not a "${WIDGET_FORMAT}" document (format is ${describe(document.format)})`);
  }
  if (typeof document.version !== "number" || !Number.isInteger(document.version)) {
    throw new Error(`widget JSON version must be an integer, got ${describe(document.version)}`);
  }
  if (document.version < 1 || document.version > WIDGET_VERSION) {
    throw new Error(`unsupported widget JSON version ${document.version} (this editor reads 1 to ${WIDGET_VERSION})`);
  }
  const width = readInteger(document.width, "width", 1, MAX_FRAME_SIZE);
  const height = readInteger(document.height, "height", 1, MAX_FRAME_SIZE);
  const fps = readNumber(document.fps ?? DEFAULT_CLIP.fps, "fps");
  if (!(fps > 0 && fps <= MAX_FPS)) throw new Error(`fps must be in (0, ${MAX_FPS}], got ${fps}`);
  if (!Array.isArray(document.tracks)) throw new Error(`'tracks' must be a list, got ${describe(document.tracks)}`);
  if (document.tracks.length > MAX_TRACKS) {
    throw new Error(`too many tracks: ${document.tracks.length} (the limit is ${MAX_TRACKS})`);
  }
  const tracks = document.tracks.map(parseTrack);
  if (new Set(tracks.map((track) => track.id)).size !== tracks.length) throw new Error("track ids must be unique");
  const regionGrid =
    document.region_grid === undefined || document.region_grid === null
      ? null
      : readInteger(document.region_grid, "region_grid", 1, MAX_REGION_GRID);
  let regions = [];
  if (document.regions !== undefined && document.regions !== null) {
    if (document.version < REGIONS_VERSION) {
      throw new Error(`'regions' need widget JSON version ${REGIONS_VERSION} (the document says ${document.version})`);
    }
    if (!Array.isArray(document.regions)) {
      throw new Error(`'regions' of the widget JSON must be a list, got ${describe(document.regions)}`);
    }
    if (document.regions.length > MAX_REGIONS) {
      throw new Error(`too many region drags: ${document.regions.length} (the limit is ${MAX_REGIONS})`);
    }
    regions = document.regions.map(parseRegion);
    if (new Set(regions.map((region) => region.id)).size !== regions.length) throw new Error("region ids must be unique");
    const trackIds = new Set(tracks.map((track) => track.id));
    const shared = regions.find((region) => trackIds.has(region.id));
    if (shared) throw new Error(`id ${shared.id} is both a track's and a region's; ids must be unique across both`);
  }
  tracks.push(...regions);

  let duration;
  if (document.duration === undefined || document.duration === null) {
    const lastTimes = tracks.map((track) => track.keyframes[track.keyframes.length - 1].t);
    duration = lastTimes.length ? Math.max(...lastTimes) : DEFAULT_CLIP.duration;
  } else {
    duration = readNumber(document.duration, "duration");
    if (duration < 0) throw new Error(`duration must not be negative, got ${duration}`);
  }
  const grid = regionGrid ?? defaultRegionGrid(width, height);
  checkFrameBudget(duration, fps, tracks.length - regions.length + (regions.length ? grid ** 2 : 0));
  return { width, height, fps, duration, regionGrid, tracks };
}

function checkFrameBudget(duration, fps, trackCount) {
  if (duration * fps >= MAX_FRAMES) {
    throw new Error(`too many frames: ${duration} s at ${fps} fps (the limit is ${MAX_FRAMES})`);
  }
  const frames = Math.floor(duration * fps + 1e-6) + 1;
  if (frames * trackCount > MAX_TRACK_POINTS) {
    throw new Error(`${frames} frames x ${trackCount} tracks exceed the limit of ${MAX_TRACK_POINTS} points`);
  }
}

// ---------------------------------------------------------------------------
// Editor state
// ---------------------------------------------------------------------------

/**
 * Tracks and clip settings with undo/redo. Tracks and keyframes are frozen and replaced on every
 * edit, so a history entry is just the previous arrays. Edits that pass the same `coalesce` key
 * one after another (e.g. the pointer moves of one drag) form a single undo step.
 */
export class TrackEditorState {
  #clip;
  #tracks = Object.freeze([]);
  #nextId = 0;
  #selection = null;
  #undoStack = [];
  #redoStack = [];
  #historyLimit;
  #lastCoalesceKey = null;
  #regionGrid = null; // null: the default for the frame size

  constructor({ width, height, fps, duration, historyLimit = DEFAULT_HISTORY_LIMIT } = {}) {
    this.#clip = Object.freeze(validateClip({ ...DEFAULT_CLIP }, { width, height, fps, duration }));
    this.#historyLimit = historyLimit;
  }

  get clip() {
    return this.#clip;
  }

  /** Point tracks and region handles (those have a `region`: {kind, radius}), in drawing order. */
  get tracks() {
    return this.#tracks;
  }

  /** The region handles among `tracks`. */
  get regions() {
    return this.#tracks.filter((track) => track.region);
  }

  /** Grid tracks per side that region drags move (the document's `region_grid`). */
  get regionGrid() {
    return this.#regionGrid ?? defaultRegionGrid(this.#clip.width, this.#clip.height);
  }

  /** Whether the grid size was chosen (by setRegionGrid or a document) rather than derived from the frame size. */
  get regionGridChosen() {
    return this.#regionGrid !== null;
  }

  /** Grid tracks per side for region drags, or null for the default of the frame size; undoable. */
  setRegionGrid(size) {
    const grid = size === null ? null : readInteger(size, "region grid", 1, MAX_REGION_GRID);
    const effective = grid ?? defaultRegionGrid(this.#clip.width, this.#clip.height);
    checkFrameBudget(this.#clip.duration, this.#clip.fps, countTracks(this.#tracks, effective));
    this.#record();
    this.#regionGrid = grid;
  }

  get selection() {
    return this.#selection;
  }

  get canUndo() {
    return this.#undoStack.length > 0;
  }

  get canRedo() {
    return this.#redoStack.length > 0;
  }

  getTrack(trackId) {
    return this.#tracks.find((track) => track.id === trackId) ?? null;
  }

  // --- selection (not part of the undo history) ---

  select(trackId, keyframeIndex = null) {
    const track = this.getTrack(trackId);
    if (!track) throw new Error(`no track with id ${trackId}`);
    if (keyframeIndex !== null && !(keyframeIndex >= 0 && keyframeIndex < track.keyframes.length)) {
      throw new Error(`track ${trackId} has no keyframe ${keyframeIndex}`);
    }
    this.#selection = Object.freeze({ trackId, keyframeIndex });
  }

  clearSelection() {
    this.#selection = null;
  }

  /** The selected keyframe (or the track's first one when only the track is selected). */
  selectedKeyframe() {
    const track = this.#selection && this.getTrack(this.#selection.trackId);
    if (!track) return null;
    const index = this.#selection.keyframeIndex ?? 0;
    return { track, index, keyframe: track.keyframes[index] };
  }

  // --- edits ---

  /** Add a moving track from pointer samples [{t seconds, x, y}]; it spans the rest of the clip by default. */
  addTrackFromDrag(samples, { start = 0, duration, tolerance } = {}) {
    const length = duration ?? this.#clip.duration - start;
    const keyframes = keyframesFromDrag(samples, { start, duration: length, tolerance });
    return this.#addTrack(false, keyframes);
  }

  /** Add a static anchor pinning the point (x, y) from `start` to the end of the clip. */
  addAnchor(x, y, { start = 0 } = {}) {
    if (![x, y, start].every(Number.isFinite) || start < 0) throw new Error("an anchor needs finite x, y and start >= 0");
    return this.#addTrack(true, [makeKeyframe(start, x, y)]);
  }

  /**
   * Add a region drag from pointer samples: the grid around the first sample follows the drag
   * within `radius` (units of the frame's shorter side). Drawn ahead ("path") it is stretched over
   * [start, start + duration] like a track; with `live` it was made while a stream ran and keeps
   * the pointer's real-time pacing from `start` (the stream's clock).
   */
  addRegionDrag(samples, { start = 0, duration, radius = DEFAULT_RADIUS, live = false, tolerance } = {}) {
    checkRadius(radius);
    const keyframes = live
      ? keyframesFromLiveDrag(samples, { start, tolerance })
      : keyframesFromDrag(samples, { start, duration: duration ?? this.#clip.duration - start, tolerance });
    return this.#addTrack(false, keyframes, { kind: live ? "live" : "path", radius: roundValue(radius) });
  }

  /** Add a region anchor: the grid within `radius` of (x, y) stays put for drags that grab from `start` on. */
  addRegionAnchor(x, y, { start = 0, radius = DEFAULT_RADIUS } = {}) {
    checkRadius(radius);
    if (![x, y, start].every(Number.isFinite) || start < 0) throw new Error("an anchor needs finite x, y and start >= 0");
    return this.#addTrack(true, [makeKeyframe(start, x, y)], { kind: "anchor", radius: roundValue(radius) });
  }

  /** Change the radius of a region handle. */
  setRegionRadius(trackId, radius, { coalesce = null } = {}) {
    const track = this.#requireTrack(trackId);
    if (!track.region) throw new Error(`track ${trackId} is not a region drag`);
    checkRadius(radius);
    const region = { kind: track.region.kind, radius: roundValue(radius) };
    this.#replaceTrack(makeTrack(trackId, track.static, [...track.keyframes], region), coalesce);
  }

  /** Shift a whole track; the shift is limited so that no keyframe leaves the allowed range. */
  moveTrack(trackId, dx, dy, { coalesce = null } = {}) {
    const track = this.#requireTrack(trackId);
    const xs = track.keyframes.map((keyframe) => keyframe.x);
    const ys = track.keyframes.map((keyframe) => keyframe.y);
    const limitedDx = Math.min(MAX_COORDINATE - Math.max(...xs), Math.max(MIN_COORDINATE - Math.min(...xs), dx));
    const limitedDy = Math.min(MAX_COORDINATE - Math.max(...ys), Math.max(MIN_COORDINATE - Math.min(...ys), dy));
    const keyframes = track.keyframes.map((keyframe) =>
      makeKeyframe(keyframe.t, keyframe.x + limitedDx, keyframe.y + limitedDy, keyframe.visible),
    );
    this.#replaceTrack(withKeyframes(track, keyframes), coalesce);
  }

  /** Put one keyframe at (x, y); a static track moves as a whole since it has one position. */
  moveKeyframe(trackId, index, x, y, { coalesce = null } = {}) {
    const track = this.#requireKeyframe(trackId, index);
    const keyframes = track.keyframes.map((keyframe, number) =>
      number === index || track.static ? makeKeyframe(keyframe.t, x, y, keyframe.visible) : keyframe,
    );
    this.#replaceTrack(withKeyframes(track, keyframes), coalesce);
  }

  /** `visible: false` hides the point from this keyframe until the next one. */
  setKeyframeVisible(trackId, index, visible) {
    const track = this.#requireKeyframe(trackId, index);
    if (track.region) throw new Error("region drags have no visibility: they move the grid or pin it");
    const keyframes = track.keyframes.map((keyframe, number) =>
      number === index ? makeKeyframe(keyframe.t, keyframe.x, keyframe.y, visible) : keyframe,
    );
    this.#replaceTrack(withKeyframes(track, keyframes));
  }

  deleteTrack(trackId) {
    this.#requireTrack(trackId);
    this.#record();
    this.#tracks = Object.freeze(this.#tracks.filter((track) => track.id !== trackId));
    if (this.#selection?.trackId === trackId) this.#selection = null;
  }

  clear() {
    if (this.#tracks.length === 0) return;
    this.#record();
    this.#tracks = Object.freeze([]);
    this.#selection = null;
  }

  trackTiming(trackId) {
    const { keyframes } = this.#requireTrack(trackId);
    const start = keyframes[0].t;
    return { start, duration: roundValue(keyframes[keyframes.length - 1].t - start) };
  }

  /** Move a track in time so it starts at `start` and, with two or more keyframes, lasts `duration`. */
  setTrackTiming(trackId, { start, duration } = {}) {
    const track = this.#requireTrack(trackId);
    const current = this.trackTiming(trackId);
    const newStart = start ?? current.start;
    const newDuration = duration ?? current.duration;
    if (!(Number.isFinite(newStart) && newStart >= 0)) throw new Error(`track start must be >= 0, got ${newStart}`);
    if (!(Number.isFinite(newDuration) && newDuration > 0) && track.keyframes.length > 1) {
      throw new Error(`track duration must be > 0, got ${newDuration}`);
    }
    const scale = track.keyframes.length > 1 ? newDuration / current.duration : 1;
    const keyframes = track.keyframes.map((keyframe) =>
      makeKeyframe(newStart + (keyframe.t - current.start) * scale, keyframe.x, keyframe.y, keyframe.visible),
    );
    checkKeyframeGaps(keyframes, trackId);
    this.#replaceTrack(withKeyframes(track, keyframes));
  }

  /** Change width/height/fps/duration. Pass record: false for changes that should not be undoable (frame size from an image). */
  setClip(changes, { record = true } = {}) {
    const clip = validateClip({ ...this.#clip }, changes);
    checkFrameBudget(clip.duration, clip.fps, countTracks(this.#tracks, this.#regionGrid ?? defaultRegionGrid(clip.width, clip.height)));
    if (record) this.#record();
    this.#clip = Object.freeze(clip);
  }

  // --- history ---

  /** Forget undo/redo, e.g. after loading a saved workflow, so undo cannot empty the editor. */
  clearHistory() {
    this.#undoStack = [];
    this.#redoStack = [];
    this.#lastCoalesceKey = null;
  }

  undo() {
    if (!this.canUndo) return false;
    this.#redoStack.push(this.#snapshot());
    this.#restore(this.#undoStack.pop());
    return true;
  }

  redo() {
    if (!this.canRedo) return false;
    this.#undoStack.push(this.#snapshot());
    this.#restore(this.#redoStack.pop());
    return true;
  }

  // --- widget JSON ---

  /**
   * The widget document with a fixed key order and coordinates rounded to 4 decimals. Region drags
   * make it version 2 (`regions`, `region_grid`); without them it is version 1.
   */
  toDocument() {
    const { width, height, fps, duration } = this.#clip;
    const regions = this.#tracks.filter((track) => track.region);
    const document = {
      format: WIDGET_FORMAT,
      version: regions.length ? REGIONS_VERSION : POINT_TRACKS_VERSION,
      width,
      height,
      fps,
      duration,
      tracks: this.#tracks
        .filter((track) => !track.region)
        .map((track) => ({
          id: track.id,
          static: track.static,
          keyframes: track.keyframes.map((keyframe) =>
            keyframe.visible === false
              ? { t: keyframe.t, x: keyframe.x, y: keyframe.y, visible: false }
              : { t: keyframe.t, x: keyframe.x, y: keyframe.y },
          ),
        })),
    };
    if (regions.length) {
      document.region_grid = this.regionGrid;
      document.regions = regions.map(regionEntry);
    }
    return document;
  }

  exportJson() {
    return JSON.stringify(this.toDocument());
  }

  /**
   * The document as it would be if a drag with these samples ended now, without changing the
   * state (for streaming a drag while it is drawn). Too short a drag adds nothing.
   */
  exportJsonWithDraft(samples, { region = null } = {}) {
    const document = this.toDocument();
    try {
      if (region) {
        // {radius, live, start}: a region drag in progress (a live one is what steers the stream).
        if (this.regions.length >= MAX_REGIONS) return JSON.stringify(document);
        const keyframes = region.live
          ? keyframesFromLiveDrag(samples, { start: region.start ?? 0 })
          : keyframesFromDrag(samples, { start: region.start ?? 0, duration: this.#clip.duration - (region.start ?? 0) });
        const draft = makeTrack(this.#newId(), false, keyframes, {
          kind: region.live ? "live" : "path",
          radius: roundValue(checkRadius(region.radius ?? DEFAULT_RADIUS)),
        });
        document.version = REGIONS_VERSION;
        document.region_grid = this.regionGrid;
        document.regions = [...(document.regions ?? []), regionEntry(draft)];
      } else {
        const keyframes = keyframesFromDrag(samples, { start: 0, duration: this.#clip.duration });
        document.tracks.push({ id: this.#newId(), static: false, keyframes: keyframes.map((keyframe) => ({ ...keyframe })) });
      }
    } catch {
      // fewer than two samples or an empty clip: nothing to draft yet
    }
    return JSON.stringify(document);
  }

  /** Replace everything with a validated document (JSON text or object); undoable. */
  importJson(source) {
    const parsed = parseTracksDocument(source);
    const tracks = parsed.tracks.map((track) => {
      const keyframes = track.keyframes.map((keyframe) => makeKeyframe(keyframe.t, keyframe.x, keyframe.y, keyframe.visible));
      checkKeyframeGaps(keyframes, track.id);
      return makeTrack(track.id, track.static, keyframes, track.region ?? null);
    });
    this.#record();
    this.#regionGrid = parsed.regionGrid;
    this.#clip = Object.freeze({
      width: parsed.width,
      height: parsed.height,
      fps: parsed.fps,
      duration: roundValue(parsed.duration),
    });
    this.#tracks = Object.freeze(tracks);
    this.#nextId = Math.max(this.#nextId, ...tracks.map((track) => track.id + 1));
    this.#selection = null;
  }

  // --- internals ---

  #addTrack(isStatic, keyframes, region = null) {
    if (region && this.regions.length >= MAX_REGIONS) {
      throw new Error(`at most ${MAX_REGIONS} region drags; delete one (or Clear) to add another`);
    }
    if (!region && this.#tracks.length - this.regions.length >= MAX_TRACKS) throw new Error(`at most ${MAX_TRACKS} tracks`);
    const track = makeTrack(this.#newId(), isStatic, keyframes, region);
    const id = track.id;
    const withNew = [...this.#tracks, track];
    checkFrameBudget(this.#clip.duration, this.#clip.fps, countTracks(withNew, this.regionGrid));
    this.#record();
    this.#tracks = Object.freeze(withNew);
    this.#nextId = id + 1;
    this.#selection = Object.freeze({ trackId: id, keyframeIndex: null });
    return id;
  }

  // Ids are never reused within a session, so a deleted track's id cannot come back as another track.
  #newId() {
    if (this.#nextId <= MAX_TRACK_ID) return this.#nextId;
    const used = new Set(this.#tracks.map((track) => track.id));
    let id = 0;
    while (used.has(id)) id += 1;
    return id;
  }

  #trackCount() {
    return countTracks(this.#tracks, this.regionGrid);
  }

  #requireTrack(trackId) {
    const track = this.getTrack(trackId);
    if (!track) throw new Error(`no track with id ${trackId}`);
    return track;
  }

  #requireKeyframe(trackId, index) {
    const track = this.#requireTrack(trackId);
    if (!(Number.isInteger(index) && index >= 0 && index < track.keyframes.length)) {
      throw new Error(`track ${trackId} has no keyframe ${index}`);
    }
    return track;
  }

  #replaceTrack(newTrack, coalesce = null) {
    this.#record(coalesce);
    this.#tracks = Object.freeze(this.#tracks.map((track) => (track.id === newTrack.id ? newTrack : track)));
  }

  #record(coalesce = null) {
    const merges = coalesce !== null && coalesce === this.#lastCoalesceKey;
    this.#lastCoalesceKey = coalesce;
    if (merges) return;
    this.#undoStack.push(this.#snapshot());
    if (this.#undoStack.length > this.#historyLimit) this.#undoStack.shift();
    this.#redoStack = [];
  }

  #snapshot() {
    return { clip: this.#clip, tracks: this.#tracks, regionGrid: this.#regionGrid };
  }

  #restore(snapshot) {
    this.#clip = snapshot.clip;
    this.#tracks = snapshot.tracks;
    this.#regionGrid = snapshot.regionGrid;
    this.#lastCoalesceKey = null;
    const selected = this.#selection && this.getTrack(this.#selection.trackId);
    if (!selected || (this.#selection.keyframeIndex ?? 0) >= selected.keyframes.length) this.#selection = null;
  }
}

// Tracks the importer makes: point tracks plus, with any region drag, the grid.
function countTracks(tracks, regionGrid) {
  const regions = tracks.filter((track) => track.region).length;
  return tracks.length - regions + (regions ? regionGrid ** 2 : 0);
}

function regionEntry(track) {
  return {
    id: track.id,
    kind: track.region.kind,
    radius: track.region.radius,
    keyframes: track.keyframes.map((keyframe) => ({ t: keyframe.t, x: keyframe.x, y: keyframe.y })),
  };
}

function validateClip(clip, changes = {}) {
  const result = { ...clip };
  for (const key of ["width", "height"]) {
    if (changes[key] !== undefined) result[key] = readInteger(changes[key], key, 1, MAX_FRAME_SIZE);
  }
  if (changes.fps !== undefined) {
    const fps = readNumber(changes.fps, "fps");
    if (!(fps > 0 && fps <= MAX_FPS)) throw new Error(`fps must be in (0, ${MAX_FPS}], got ${fps}`);
    result.fps = fps;
  }
  if (changes.duration !== undefined) {
    const duration = readNumber(changes.duration, "duration");
    if (duration < 0) throw new Error(`duration must not be negative, got ${duration}`);
    result.duration = roundValue(duration);
  }
  return result;
}

// ---------------------------------------------------------------------------
// Region grid preview: the rules of motionstream_core/motion/drag_control.py
// ---------------------------------------------------------------------------

/** The grid's base points, row-major from the top left: Float64Array [x0, y0, x1, y1, ...]. */
export function regionGridPoints(gridSize = DEFAULT_REGION_GRID) {
  const points = new Float64Array(gridSize * gridSize * 2);
  for (let row = 0; row < gridSize; row += 1) {
    for (let col = 0; col < gridSize; col += 1) {
      const index = (row * gridSize + col) * 2;
      points[index] = (col + 0.5) / gridSize;
      points[index + 1] = (row + 0.5) / gridSize;
    }
  }
  return points;
}

function cosineFalloff(distance, radius) {
  return distance < radius ? 0.5 * (1 + Math.cos((Math.PI * distance) / radius)) : 0;
}

/**
 * How region handles (tracks with a `region`) move grid points, as the Python expansion does:
 * handles in the order of their first times (an anchor before a drag at the same time), an
 * anchor pins what lies within its radius for the drags that grab after it, a drag weighs every
 * point by the cosine falloff of its distance (units of the frame's shorter side, `aspect` =
 * width / height) from where the point is at grab time, drags that overlap in time share a point.
 * Each point moves on its own, so `basePoints` may be any points (a coarse grid to draw, say).
 * Returns {basePoints, positionsAt(t) -> Float64Array like basePoints}.
 */
export function regionField(regions, { aspect = 1, basePoints = regionGridPoints() } = {}) {
  const count = basePoints.length / 2;
  const scaleX = Math.max(aspect, 1);
  const scaleY = Math.max(1 / aspect, 1);
  const distance = (x0, y0, x1, y1) => Math.hypot((x0 - x1) * scaleX, (y0 - y1) * scaleY);
  const order = regions
    .map((region, index) => ({ region, index }))
    .sort(
      (a, b) =>
        a.region.keyframes[0].t - b.region.keyframes[0].t ||
        (a.region.region.kind !== "anchor") - (b.region.region.kind !== "anchor") ||
        a.index - b.index,
    );
  const pinned = new Float64Array(count);
  const handles = []; // {track, grab, weights, start, end}
  let shared = [];

  // Weights of the handles registered so far, divided among those that overlap in time.
  function share() {
    shared = handles.map((handle, index) => {
      const partners = handles.filter(
        (other, otherIndex) => otherIndex === index || (handle.start < other.end && other.start < handle.end),
      );
      if (partners.length === 1) return handle.weights;
      const weights = new Float64Array(count);
      for (let point = 0; point < count; point += 1) {
        let total = 0;
        for (const partner of partners) total += partner.weights[point];
        weights[point] = handle.weights[point] / Math.max(1, total);
      }
      return weights;
    });
  }

  function positionsAt(t) {
    const positions = Float64Array.from(basePoints);
    handles.forEach((handle, index) => {
      const at = regionHandleAt(handle.track, t);
      const dx = at.x - handle.grab.x;
      const dy = at.y - handle.grab.y;
      if (dx === 0 && dy === 0) return;
      const weights = shared[index];
      for (let point = 0; point < count; point += 1) {
        positions[2 * point] += weights[point] * dx;
        positions[2 * point + 1] += weights[point] * dy;
      }
    });
    return positions;
  }

  for (const { region } of order) {
    const first = region.keyframes[0];
    const { radius } = region.region;
    if (region.region.kind === "anchor") {
      for (let point = 0; point < count; point += 1) {
        const falloff = cosineFalloff(distance(basePoints[2 * point], basePoints[2 * point + 1], first.x, first.y), radius);
        pinned[point] = Math.max(pinned[point], falloff);
      }
      continue;
    }
    const current = positionsAt(first.t);
    const weights = new Float64Array(count);
    for (let point = 0; point < count; point += 1) {
      const falloff = cosineFalloff(distance(current[2 * point], current[2 * point + 1], first.x, first.y), radius);
      weights[point] = falloff * (1 - pinned[point]);
    }
    handles.push({
      track: region,
      grab: { x: first.x, y: first.y },
      weights,
      start: first.t,
      end: region.keyframes[region.keyframes.length - 1].t,
    });
    share();
  }
  return { basePoints, positionsAt };
}
