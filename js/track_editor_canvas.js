// The track editor's DOM: toolbar, canvas drawing and pointer/keyboard handling over a
// TrackEditorState. No ComfyUI imports, so the same code runs in ComfyUI and on a plain test page.
//
// Modes (toolbar): Draw (a drag draws a new track, across existing ones too), Move (drag a point or
// a line), Anchor (click pins a static point) and Region (a drag moves a region of the image: a
// handle with a visible radius that the Python side expands into a grid of tracks; blue when drawn
// ahead, green when made while a stream runs, red for a pinned region). Play animates the tracks
// and the region grid over the clip.
//
// Keys are taken while the editor has focus: the focus sits on a read-only textarea inside the
// editor, which ComfyUI's graph undo (a window capture listener that skips text fields) and its
// keybindings leave alone, and a capture listener on the editor stops the keys it handles there.
// While the queue runs on every change, the graph undo no longer skips text fields; it reads the
// key a frame later, so the editor's listener hides the key of the undo/redo it took from it.

import {
  DEFAULT_RADIUS,
  MAX_RADIUS,
  TrackEditorState,
  positionAt,
  regionField,
  regionGridPoints,
  regionHandleAt,
  roundValue,
} from "./track_editor_state.js";

const HANDLE_RADIUS_PX = 7;
const PATH_HIT_PX = 6;
// A press that moves less than this is a click, not a drag.
const CLICK_SLOP_PX = 4;
const STYLE_ELEMENT_ID = "motionstream-track-editor-style";
export const MODES = Object.freeze(["draw", "move", "anchor", "region"]);
// The paper demo's colours: blue drags drawn ahead, green live drags, red pinned regions.
export const REGION_COLORS = Object.freeze({ path: "#4d8dff", live: "#34d17a", anchor: "#ff4d4d" });
// Grid points per side drawn to preview region drags (the model gets the document's region_grid).
const PREVIEW_GRID = 24;
const RADIUS_STEP = 1.15;

const STYLE_SHEET = `
.ms-track-editor { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%;
  box-sizing: border-box; font: 12px sans-serif; color: var(--input-text, #ddd); outline: none; }
.ms-track-editor .ms-row { display: flex; flex-wrap: wrap; gap: 3px; align-items: center; }
.ms-track-editor button, .ms-track-editor input { font: inherit; color: inherit;
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #555); border-radius: 4px; }
.ms-track-editor button { padding: 2px 7px; cursor: pointer; }
.ms-track-editor button:disabled { opacity: 0.4; cursor: default; }
.ms-track-editor button.ms-active { border-color: #4aa3ff; background: #1d3c5c; }
.ms-track-editor input[type=number] { width: 4.5em; padding: 1px 3px; }
.ms-track-editor input[type=range] { flex: 1 1 80px; min-width: 60px; }
.ms-track-editor .ms-stage { position: relative; flex: 1 1 auto; min-height: 120px; }
.ms-track-editor canvas { position: absolute; touch-action: none; cursor: crosshair; background: #111; }
.ms-track-editor .ms-status { min-height: 1.3em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  font-family: monospace; opacity: 0.85; }
.ms-track-editor .ms-status.ms-error { color: #ff7a7a; opacity: 1; }
.ms-track-editor .ms-sep { width: 1px; align-self: stretch; background: var(--border-color, #555); margin: 0 2px; }
.ms-track-editor .ms-key-sink { position: absolute; left: 0; top: 0; width: 1px; height: 1px; padding: 0; border: 0;
  opacity: 0; resize: none; overflow: hidden; pointer-events: none; }
.ms-track-editor:has(.ms-key-sink:focus) .ms-stage canvas { outline: 1px solid #4aa3ff; }
`;

const HINTS = {
  draw: "Draw: drag to draw a track (across others too) · click a track: select · shift-click: anchor · Space: play",
  move: "Move: drag a point or a line to move it · Del: delete · Ctrl+Z / Ctrl+Shift+Z",
  anchor: "Anchor: click to pin a static point",
  region: "Region: drag to move a region (radius r; [ and ] resize) · shift-click: pin a region · Space: play",
};

const CANVAS_HELP = [
  "Draw mode: drag to draw a moving track, also across existing tracks (it spans the clip; set start/len below)",
  "Move mode: drag a point to move it, a line to move the whole track",
  "Anchor mode (or shift-click in Draw mode): pin a static point",
  "Region mode: drag to move the region within the circle (blue; green while a stream runs); shift-click pins a region (red)",
  "V: hide/show the selected point until the next one · Del: delete · Esc: deselect · Space: play · [ ]: radius",
].join("\n");

function injectStyleSheet(document) {
  if (document.getElementById(STYLE_ELEMENT_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ELEMENT_ID;
  style.textContent = STYLE_SHEET;
  document.head.appendChild(style);
}

// Point tracks take hues away from the region colours (red, green, blue): orange to lime, cyan,
// violet to pink, spread by the golden angle so neighbouring ids differ.
const TRACK_HUE_BANDS = [
  [20, 95],
  [160, 200],
  [265, 340],
];
const TRACK_HUE_SPAN = TRACK_HUE_BANDS.reduce((sum, [low, high]) => sum + high - low, 0);

function trackColor(trackId) {
  let offset = ((trackId * 0.618033988749895) % 1) * TRACK_HUE_SPAN;
  for (const [low, high] of TRACK_HUE_BANDS) {
    if (offset < high - low) return `hsl(${low + offset}, 85%, 60%)`;
    offset -= high - low;
  }
  return `hsl(${TRACK_HUE_BANDS[0][0]}, 85%, 60%)`;
}

function formatNumber(value, decimals = 4) {
  return value.toFixed(decimals);
}

/**
 * Build an editor inside `container`.
 * options: width/height (frame size in pixels), fps, duration (seconds), onChange(json) called after
 * every committed edit, onInput(json) called (once per animation frame at most) while a drag is in
 * progress with the document as it would be if the drag ended now, sizeFromImage (default true: a
 * background image sets the frame size), liveClock() -> seconds of video a running stream has made
 * (null when none runs): region drags made while it runs are live drags timed by that clock.
 * Returns the editor API (state, exportJson, load, importJson, setBackground, setMode, play, ...).
 */
export function createTrackEditor(container, options = {}) {
  const {
    width,
    height,
    fps,
    duration,
    onChange = () => {},
    onInput = null,
    sizeFromImage = true,
    liveClock = () => null,
  } = options;
  const document = container.ownerDocument;
  const window = document.defaultView;
  injectStyleSheet(document);
  const state = new TrackEditorState({ width, height, fps, duration });

  const element = make("div", { className: "ms-track-editor" });
  const toolbar = make("div", { className: "ms-row" });
  const timingRow = make("div", { className: "ms-row" });
  const stage = make("div", { className: "ms-stage" });
  const canvas = make("canvas", { title: CANVAS_HELP });
  const status = make("div", { className: "ms-status" });
  // Holds the keyboard focus (see the top of this file); read-only, so nothing can be typed into it.
  const keySink = make("textarea", { className: "ms-key-sink", readOnly: true, tabIndex: 0, rows: 1 });
  keySink.setAttribute("aria-label", "track editor: keyboard shortcuts");
  stage.append(canvas, keySink);
  element.append(toolbar, timingRow, stage, status);
  container.append(element);
  const context = canvas.getContext("2d");

  let mode = "draw";
  let radius = DEFAULT_RADIUS;
  let gesture = null;
  let gestureCount = 0;
  let background = null;
  let previewTime = null;
  let playing = null; // {last, frame} while the Play button animates the preview time
  let hover = null; // pointer position over the canvas in Region mode (shows the radius)
  let renderPending = false;
  let fieldCache = { tracks: null, aspect: null, field: null };

  // --- toolbar ---

  const modeButtons = {
    draw: button("Draw", "drag to draw a new track, also across existing tracks", () => setMode("draw")),
    move: button("Move", "drag a point or a line to move it", () => setMode("move")),
    anchor: button("Anchor", "click to pin a static point (or shift-click in Draw mode)", () => setMode("anchor")),
    region: button("Region", "drag to move a region of the image (radius r); shift-click pins a region", () =>
      setMode("region"),
    ),
  };
  const radiusInput = numberInput("radius of region drags, a fraction of the frame's shorter side ([ and ] resize)", 0.01, (value) =>
    applyRadius(value),
  );
  radiusInput.max = String(MAX_RADIUS);
  const gridInput = make("input", {
    type: "number",
    step: 1,
    min: 1,
    max: 64,
    title: "grid tracks per side that region drags move (empty: one per 16 pixels of the frame's shorter side)",
  });
  gridInput.addEventListener("change", () => {
    const value = gridInput.value === "" ? null : Number(gridInput.value);
    attempt(() => state.setRegionGrid(value));
  });
  const undoButton = button("Undo", "Ctrl+Z", () => editor.undo());
  const redoButton = button("Redo", "Ctrl+Shift+Z", () => editor.redo());
  const deleteButton = button("Delete", "delete the selected track (Del)", () => editor.deleteSelected());
  const clearButton = button("Clear", "remove all tracks", () => editor.clear());
  const importButton = button("Import", "load tracks from a .json file", () => fileInput.click());
  const exportButton = button("Export", "save the tracks as a .json file", () => downloadJson());
  const fileInput = make("input", { type: "file", accept: ".json,application/json", hidden: true });
  fileInput.addEventListener("change", () => importFile(fileInput.files?.[0]));
  toolbar.append(
    ...Object.values(modeButtons),
    label("r"),
    radiusInput,
    label("grid"),
    gridInput,
    make("span", { className: "ms-sep" }),
    undoButton,
    redoButton,
    deleteButton,
    clearButton,
    importButton,
    exportButton,
    fileInput,
  );

  const startInput = numberInput("start of the selected track (s)", 0.05, (value) =>
    applyTiming({ start: value }),
  );
  const lengthInput = numberInput("length of the selected track (s)", 0.05, (value) =>
    applyTiming({ duration: value }),
  );
  const clipInput = numberInput("clip length (s)", 0.5, (value) => applyClip({ duration: value }));
  const fpsInput = numberInput("frames per second", 1, (value) => applyClip({ fps: value }));
  const playButton = button("Play", "play the tracks over the clip (Space)", () => togglePlay());
  const timeSlider = make("input", { type: "range", min: 0, step: "any", title: "preview positions at time t" });
  const timeLabel = make("span", { textContent: "t –" });
  timeSlider.addEventListener("input", () => {
    stopPlaying();
    previewTime = Number(timeSlider.value);
    refresh();
  });
  timingRow.append(
    label("start"),
    startInput,
    label("len"),
    lengthInput,
    label("clip"),
    clipInput,
    label("fps"),
    fpsInput,
    playButton,
    timeSlider,
    timeLabel,
  );

  function make(tag, properties = {}) {
    return Object.assign(document.createElement(tag), properties);
  }

  function label(text) {
    return make("span", { textContent: text });
  }

  function button(text, title, onClick) {
    const element = make("button", { type: "button", textContent: text, title });
    // A button never keeps the focus: keys go on to the editor's key sink, not to the host.
    element.addEventListener("mousedown", (event) => event.preventDefault());
    element.addEventListener("click", (event) => {
      event.preventDefault();
      onClick();
      focusKeys();
    });
    return element;
  }

  function numberInput(title, step, onCommit) {
    const input = make("input", { type: "number", step, min: 0, title });
    input.addEventListener("change", () => {
      const value = Number(input.value);
      if (input.value !== "" && Number.isFinite(value)) onCommit(value);
      else refresh();
    });
    return input;
  }

  function focusKeys() {
    if (document.activeElement !== keySink) keySink.focus({ preventScroll: true });
  }

  function setMode(next) {
    if (!MODES.includes(next)) throw new Error(`unknown editor mode ${next}; one of ${MODES.join(", ")}`);
    mode = next;
    if (mode !== "region") hover = null;
    refresh();
  }

  function applyTiming(timing) {
    const selected = state.selection;
    if (!selected) return;
    attempt(() => state.setTrackTiming(selected.trackId, timing));
  }

  function applyClip(changes) {
    attempt(() => state.setClip(changes));
  }

  // The radius of new region drags, and of the selected one.
  function applyRadius(value, { coalesce = null } = {}) {
    if (!(value > 0 && value <= MAX_RADIUS)) {
      refresh();
      showError(`the radius must be in (0, ${MAX_RADIUS}], got ${value}`);
      return;
    }
    radius = roundValue(value);
    const selected = state.selection && state.getTrack(state.selection.trackId);
    if (selected?.region) attempt(() => state.setRegionRadius(selected.id, radius, { coalesce }));
    else refresh();
  }

  // Run an edit; report its Error in the status line instead of throwing into event handlers.
  function attempt(edit) {
    try {
      edit();
      commit();
      return true;
    } catch (error) {
      refresh();
      showError(error.message);
      return false;
    }
  }

  function commit() {
    refresh();
    onChange(state.exportJson());
  }

  function showError(message) {
    status.textContent = message;
    status.classList.add("ms-error");
  }

  async function importFile(file) {
    fileInput.value = "";
    if (!file) return;
    const text = await file.text();
    attempt(() => state.importJson(text));
  }

  function downloadJson() {
    const blob = new Blob([state.exportJson()], { type: "application/json" });
    const link = make("a", { href: URL.createObjectURL(blob), download: "motionstream_tracks.json" });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // --- playback ---

  function togglePlay() {
    if (playing) stopPlaying();
    else startPlaying();
    refresh();
  }

  function startPlaying() {
    const { duration: clipDuration } = state.clip;
    if (!(clipDuration > 0)) return;
    if (previewTime === null || previewTime >= clipDuration) previewTime = 0;
    playing = { last: performance.now(), frame: requestAnimationFrame(advance) };
  }

  function stopPlaying() {
    if (!playing) return;
    cancelAnimationFrame(playing.frame);
    playing = null;
  }

  function advance(now) {
    if (!playing) return;
    const clipDuration = state.clip.duration;
    previewTime = Math.min(clipDuration, previewTime + Math.max(0, now - playing.last) / 1000);
    playing.last = now;
    if (previewTime >= clipDuration) {
      playing = null;
      refresh();
      return;
    }
    playing.frame = requestAnimationFrame(advance);
    updateTimeline();
    render();
  }

  // --- view refresh ---

  function refresh() {
    const { clip, selection } = state;
    for (const [name, modeButton] of Object.entries(modeButtons)) modeButton.classList.toggle("ms-active", mode === name);
    undoButton.disabled = !state.canUndo;
    redoButton.disabled = !state.canRedo;
    deleteButton.disabled = !selection;
    clearButton.disabled = state.tracks.length === 0;
    const selectedTrack = selection && state.getTrack(selection.trackId);
    const timing = selection && state.trackTiming(selection.trackId);
    setInputValue(startInput, timing?.start);
    setInputValue(lengthInput, timing && selectedTrack.keyframes.length > 1 ? timing.duration : undefined);
    setInputValue(clipInput, clip.duration);
    setInputValue(fpsInput, clip.fps);
    setInputValue(radiusInput, selectedTrack?.region ? selectedTrack.region.radius : radius);
    setInputValue(gridInput, state.regionGrid);
    timeSlider.max = String(clip.duration);
    playButton.textContent = playing ? "Pause" : "Play";
    playButton.classList.toggle("ms-active", Boolean(playing));
    playButton.disabled = !(clip.duration > 0);
    updateTimeline();
    status.classList.remove("ms-error");
    status.textContent = describeSelection() ?? HINTS[mode];
    canvas.style.cursor = mode === "move" ? "move" : mode === "region" ? "grab" : "crosshair";
    fitCanvas();
    render();
  }

  function updateTimeline() {
    if (previewTime !== null && document.activeElement !== timeSlider) timeSlider.value = String(previewTime);
    timeLabel.textContent = previewTime === null ? "t –" : `t ${previewTime.toFixed(2)} s`;
  }

  function setInputValue(input, value) {
    input.disabled = value === undefined;
    if (document.activeElement !== input) input.value = value === undefined ? "" : String(value);
  }

  function describeSelection() {
    const selected = state.selectedKeyframe();
    if (!selected) return null;
    const { track, index, keyframe } = selected;
    const where = `x ${formatNumber(keyframe.x)}  y ${formatNumber(keyframe.y)}  t ${formatNumber(keyframe.t, 3)} s`;
    if (track.region) {
      const size = `r ${formatNumber(track.region.radius, 3)}`;
      if (track.region.kind === "anchor") return `region anchor #${track.id}  ${size}  ${where}`;
      const kind = track.region.kind === "live" ? "live region drag" : "region drag";
      return `${kind} #${track.id}  ${size}  point ${index + 1}/${track.keyframes.length}  ${where}`;
    }
    if (track.static) return `anchor #${track.id}  ${where}`;
    const hidden = keyframe.visible === false ? "  (hidden until next)" : "";
    return `track #${track.id}  point ${index + 1}/${track.keyframes.length}  ${where}${hidden}`;
  }

  // --- canvas geometry ---

  function fitCanvas() {
    const { width: frameWidth, height: frameHeight } = state.clip;
    const availableWidth = stage.clientWidth;
    const availableHeight = stage.clientHeight;
    if (!availableWidth || !availableHeight) return;
    const scale = Math.min(availableWidth / frameWidth, availableHeight / frameHeight);
    const cssWidth = Math.max(1, Math.floor(frameWidth * scale));
    const cssHeight = Math.max(1, Math.floor(frameHeight * scale));
    Object.assign(canvas.style, {
      width: `${cssWidth}px`,
      height: `${cssHeight}px`,
      left: `${Math.floor((availableWidth - cssWidth) / 2)}px`,
      top: `${Math.floor((availableHeight - cssHeight) / 2)}px`,
    });
    const pixelRatio = window.devicePixelRatio || 1;
    const backingWidth = Math.round(cssWidth * pixelRatio);
    const backingHeight = Math.round(cssHeight * pixelRatio);
    if (canvas.width !== backingWidth || canvas.height !== backingHeight) {
      canvas.width = backingWidth;
      canvas.height = backingHeight;
    }
  }

  // Normalised frame coordinates of a pointer event. The bounding rect includes any CSS scale
  // applied by the host (ComfyUI scales DOM widgets with the graph zoom).
  function normalisedPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: (event.clientX - rect.left) / rect.width,
      y: (event.clientY - rect.top) / rect.height,
      rect,
    };
  }

  function distancePx(a, b, rect) {
    return Math.hypot((a.x - b.x) * rect.width, (a.y - b.y) * rect.height);
  }

  function distanceToSegmentPx(point, a, b, rect) {
    const ax = a.x * rect.width;
    const ay = a.y * rect.height;
    const dx = b.x * rect.width - ax;
    const dy = b.y * rect.height - ay;
    const px = point.x * rect.width - ax;
    const py = point.y * rect.height - ay;
    const lengthSquared = dx * dx + dy * dy;
    const along = lengthSquared > 0 ? Math.min(1, Math.max(0, (px * dx + py * dy) / lengthSquared)) : 0;
    return Math.hypot(px - along * dx, py - along * dy);
  }

  // The selected track is tested first so its points win over overlapping tracks; later tracks are drawn on top.
  function hitTest(point, rect) {
    const selectedId = state.selection?.trackId;
    const ordered = [...state.tracks].reverse().sort((a, b) => (b.id === selectedId) - (a.id === selectedId));
    for (const track of ordered) {
      const index = track.keyframes.findIndex((keyframe) => distancePx(point, keyframe, rect) <= HANDLE_RADIUS_PX);
      if (index >= 0) return { trackId: track.id, keyframeIndex: index };
    }
    for (const track of ordered) {
      for (let index = 1; index < track.keyframes.length; index += 1) {
        if (distanceToSegmentPx(point, track.keyframes[index - 1], track.keyframes[index], rect) <= PATH_HIT_PX) {
          return { trackId: track.id, keyframeIndex: null };
        }
      }
    }
    return null;
  }

  // --- pointer gestures ---

  function streamTime() {
    const now = liveClock?.();
    return typeof now === "number" && Number.isFinite(now) && now >= 0 ? now : null;
  }

  function onPointerDown(event) {
    if (event.button !== 0 || gesture) return;
    event.preventDefault();
    event.stopPropagation(); // the host must not start dragging the node
    focusKeys();
    const point = normalisedPoint(event);
    const hit = hitTest(point, point.rect);
    gestureCount += 1;
    if (mode === "anchor" || (mode === "draw" && event.shiftKey)) {
      attempt(() => state.addAnchor(point.x, point.y));
      return;
    }
    if (mode === "region" && event.shiftKey) {
      attempt(() => state.addRegionAnchor(point.x, point.y, { radius, start: streamTime() ?? 0 }));
      return;
    }
    if (mode === "move") {
      if (hit) {
        state.select(hit.trackId, hit.keyframeIndex);
        gesture = { kind: hit.keyframeIndex === null ? "move-track" : "move-keyframe", ...hit, last: point };
      } else {
        gesture = { kind: "none" };
      }
    } else {
      // Draw and Region: a press that turns into a drag draws, whatever it started on; a click selects.
      gesture = { kind: mode === "region" ? "region" : "draw", hit, start: point, samples: [sampleOf(event, point)] };
      if (mode === "region") {
        const now = streamTime();
        gesture.region = { radius, live: now !== null, start: now ?? 0 };
      }
    }
    gesture.moved = false;
    gesture.pointerId = event.pointerId;
    gesture.coalesce = `gesture-${gestureCount}`;
    canvas.setPointerCapture?.(event.pointerId);
    refresh();
  }

  function sampleOf(event, point) {
    return { t: event.timeStamp / 1000, x: point.x, y: point.y };
  }

  function onPointerMove(event) {
    if (!gesture) {
      if (mode === "region") {
        hover = normalisedPoint(event);
        scheduleRender();
      }
      return;
    }
    if (event.pointerId !== gesture.pointerId) return;
    const point = normalisedPoint(event);
    if (gesture.kind === "none") return;
    if (gesture.kind === "draw" || gesture.kind === "region") {
      const events = event.getCoalescedEvents?.() ?? [];
      for (const coalesced of events.length ? events : [event]) {
        gesture.samples.push(sampleOf(coalesced, normalisedPoint(coalesced)));
      }
      gesture.moved ||= distancePx(point, gesture.start, point.rect) >= CLICK_SLOP_PX;
      hover = gesture.kind === "region" ? point : null;
      scheduleRender();
      return;
    }
    const options = { coalesce: gesture.coalesce };
    if (gesture.kind === "move-track") {
      state.moveTrack(gesture.trackId, point.x - gesture.last.x, point.y - gesture.last.y, options);
    } else {
      state.moveKeyframe(gesture.trackId, gesture.keyframeIndex, point.x, point.y, options);
    }
    gesture.last = point;
    gesture.moved = true;
    status.textContent = describeSelection() ?? HINTS[mode];
    scheduleRender();
  }

  function onPointerUp(event) {
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    const finished = gesture;
    gesture = null;
    canvas.releasePointerCapture?.(event.pointerId);
    if (finished.kind === "draw" || finished.kind === "region") {
      if (event.type === "pointercancel") return refresh();
      if (!finished.moved) {
        if (finished.hit) state.select(finished.hit.trackId, finished.hit.keyframeIndex);
        else state.clearSelection();
        return refresh();
      }
      finished.samples.push(sampleOf(event, normalisedPoint(event)));
      if (finished.kind === "draw") attempt(() => state.addTrackFromDrag(finished.samples));
      else attempt(() => state.addRegionDrag(finished.samples, finished.region));
    } else if (finished.kind === "none") {
      state.clearSelection();
      refresh();
    } else if (finished.moved) {
      commit();
    } else {
      refresh();
    }
  }

  function onPointerLeave() {
    if (hover && !gesture) {
      hover = null;
      scheduleRender();
    }
  }

  // --- keyboard ---

  // Capture phase on the editor: runs before anything inside it and stops the keys it handles, so
  // the host (ComfyUI's keybindings, node deletion) never sees them. Number fields keep their keys.
  function onKeyDown(event) {
    const target = event.target;
    if (target instanceof window.HTMLInputElement || (target instanceof window.HTMLTextAreaElement && target !== keySink)) return;
    const key = event.key.toLowerCase();
    const command = event.ctrlKey || event.metaKey;
    let handled = true;
    if (command && key === "z" && !event.shiftKey) editor.undo();
    else if (command && ((key === "z" && event.shiftKey) || key === "y")) editor.redo();
    else if (command || event.altKey) handled = false;
    else if (key === "delete" || key === "backspace") editor.deleteSelected();
    else if (key === "escape") {
      state.clearSelection();
      refresh();
    } else if (key === "v") toggleSelectedVisibility();
    else if (key === " ") togglePlay();
    else if (key === "[" || key === "]") applyRadius(roundValue(key === "]" ? radius * RADIUS_STEP : radius / RADIUS_STEP), { coalesce: "radius-keys" });
    else handled = false;
    if (handled) {
      event.preventDefault();
      event.stopPropagation();
      // The host's window listener has already seen this event and reads its key in a later frame.
      if (command) Object.defineProperty(event, "key", { value: "Unidentified" });
    }
  }

  function toggleSelectedVisibility() {
    const selected = state.selectedKeyframe();
    if (!selected || state.selection.keyframeIndex === null || selected.track.region) return;
    attempt(() => state.setKeyframeVisible(selected.track.id, selected.index, selected.keyframe.visible === false));
  }

  // --- drawing ---

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      render();
      if (onInput && gesture?.moved) {
        if (gesture.kind === "draw") onInput(state.exportJsonWithDraft(gesture.samples));
        else if (gesture.kind === "region") onInput(state.exportJsonWithDraft(gesture.samples, { region: gesture.region }));
        else onInput(state.exportJson());
      }
    });
  }

  function render() {
    const { width, height } = canvas;
    const unit = window.devicePixelRatio || 1;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, width, height);
    if (background) context.drawImage(background, 0, 0, width, height);
    else drawPlaceholder(width, height, unit);
    const toCanvas = (point) => [point.x * width, point.y * height];
    const radiusPx = (value) => value * Math.min(width, height);
    const selectedId = state.selection?.trackId;
    if (previewTime !== null) drawRegionGrid(toCanvas, unit);
    for (const track of state.tracks) {
      if (track.region) drawRegion(track, track.id === selectedId, toCanvas, radiusPx, unit);
      else drawTrack(track, track.id === selectedId, toCanvas, unit);
    }
    if (gesture?.kind === "draw") drawStroke(gesture.samples, toCanvas, "#fff", unit);
    if (gesture?.kind === "region") {
      const color = REGION_COLORS[gesture.region.live ? "live" : "path"];
      drawRadius(toCanvas(gesture.start), radiusPx(gesture.region.radius), color, true, unit);
      drawStroke(gesture.samples, toCanvas, color, unit);
    } else if (hover && mode === "region") {
      drawRadius(toCanvas(hover), radiusPx(radius), REGION_COLORS[streamTime() === null ? "path" : "live"], false, unit);
    }
    if (previewTime !== null) drawTimeMarkers(toCanvas, radiusPx, unit);
  }

  function drawPlaceholder(width, height, unit) {
    context.fillStyle = "#1b1b1b";
    context.fillRect(0, 0, width, height);
    context.fillStyle = "#666";
    context.font = `${12 * unit}px sans-serif`;
    context.textAlign = "center";
    context.fillText(`${state.clip.width} × ${state.clip.height} – no image`, width / 2, height / 2);
  }

  function drawTrack(track, selected, toCanvas, unit) {
    const color = trackColor(track.id);
    const points = track.keyframes.map(toCanvas);
    context.lineCap = "round";
    context.lineJoin = "round";
    if (track.static) {
      const [x, y] = points[0];
      const size = (selected ? 7 : 5) * unit;
      context.fillStyle = color;
      context.strokeStyle = selected ? "#fff" : "#000";
      context.lineWidth = 1.5 * unit;
      context.fillRect(x - size, y - size, 2 * size, 2 * size);
      context.strokeRect(x - size, y - size, 2 * size, 2 * size);
      drawKeyframeRing(track, points, unit);
      return;
    }
    drawPath(track, points, color, selected, unit);
    drawKeyframeRing(track, points, unit);
  }

  function drawPath(track, points, color, selected, unit) {
    for (let index = 1; index < points.length; index += 1) {
      const hidden = track.keyframes[index - 1].visible === false;
      context.setLineDash(hidden ? [4 * unit, 4 * unit] : []);
      strokeSegment(points[index - 1], points[index], selected ? "#fff" : "rgba(0,0,0,0.6)", (selected ? 5 : 4) * unit);
      strokeSegment(points[index - 1], points[index], color, (selected ? 3 : 2) * unit);
    }
    context.setLineDash([]);
    if (points.length > 1) drawArrowHead(points[points.length - 2], points[points.length - 1], color, unit);
    points.forEach(([x, y], index) => {
      const size = (index === 0 ? 5 : selected ? 3.5 : 2.5) * unit;
      context.beginPath();
      context.arc(x, y, size, 0, 2 * Math.PI);
      context.fillStyle = index === 0 ? color : selected ? "#fff" : color;
      context.fill();
      context.lineWidth = unit;
      context.strokeStyle = "#000";
      context.stroke();
    });
  }

  // A region handle: the circle it grabs (its radius), then its path like a track's; an anchor is a
  // red circle with a pin.
  function drawRegion(track, selected, toCanvas, radiusPx, unit) {
    const color = REGION_COLORS[track.region.kind];
    const points = track.keyframes.map(toCanvas);
    context.lineCap = "round";
    context.lineJoin = "round";
    drawRadius(points[0], radiusPx(track.region.radius), color, selected, unit);
    if (track.region.kind === "anchor") {
      const [x, y] = points[0];
      const size = (selected ? 6 : 4.5) * unit;
      context.beginPath();
      context.moveTo(x, y - size);
      context.lineTo(x + size, y);
      context.lineTo(x, y + size);
      context.lineTo(x - size, y);
      context.closePath();
      context.fillStyle = color;
      context.fill();
      context.lineWidth = 1.5 * unit;
      context.strokeStyle = selected ? "#fff" : "#000";
      context.stroke();
    } else {
      drawPath(track, points, color, selected, unit);
    }
    drawKeyframeRing(track, points, unit);
  }

  function drawRadius([x, y], size, color, solid, unit) {
    context.beginPath();
    context.arc(x, y, size, 0, 2 * Math.PI);
    context.globalAlpha = 0.14;
    context.fillStyle = color;
    context.fill();
    context.globalAlpha = 1;
    context.setLineDash(solid ? [] : [5 * unit, 4 * unit]);
    context.lineWidth = 1.5 * unit;
    context.strokeStyle = color;
    context.stroke();
    context.setLineDash([]);
  }

  function currentField() {
    const aspect = state.clip.width / state.clip.height;
    if (fieldCache.tracks !== state.tracks || fieldCache.aspect !== aspect) {
      const regions = state.regions;
      fieldCache = {
        tracks: state.tracks,
        aspect,
        field: regions.length ? regionField(regions, { aspect, basePoints: regionGridPoints(PREVIEW_GRID) }) : null,
      };
    }
    return fieldCache.field;
  }

  // The grid the region drags move, at the preview time: moved points bright, the rest faint.
  function drawRegionGrid(toCanvas, unit) {
    const field = currentField();
    if (!field) return;
    const positions = field.positionsAt(previewTime);
    const base = field.basePoints;
    for (let index = 0; index < positions.length; index += 2) {
      const moved = Math.hypot(positions[index] - base[index], positions[index + 1] - base[index + 1]) > 1e-3;
      const [x, y] = toCanvas({ x: positions[index], y: positions[index + 1] });
      context.beginPath();
      context.arc(x, y, (moved ? 2.2 : 1.4) * unit, 0, 2 * Math.PI);
      context.fillStyle = moved ? "rgba(255,255,255,0.9)" : "rgba(255,255,255,0.3)";
      context.fill();
    }
  }

  function drawKeyframeRing(track, points, unit) {
    const selection = state.selection;
    if (selection?.trackId !== track.id || selection.keyframeIndex === null) return;
    const [x, y] = points[selection.keyframeIndex];
    context.beginPath();
    context.arc(x, y, HANDLE_RADIUS_PX * unit, 0, 2 * Math.PI);
    context.lineWidth = 2 * unit;
    context.strokeStyle = "#fff";
    context.stroke();
  }

  function strokeSegment([x0, y0], [x1, y1], color, lineWidth) {
    context.beginPath();
    context.moveTo(x0, y0);
    context.lineTo(x1, y1);
    context.strokeStyle = color;
    context.lineWidth = lineWidth;
    context.stroke();
  }

  function drawArrowHead([x0, y0], [x1, y1], color, unit) {
    const angle = Math.atan2(y1 - y0, x1 - x0);
    const size = 9 * unit;
    context.beginPath();
    context.moveTo(x1, y1);
    context.lineTo(x1 - size * Math.cos(angle - 0.45), y1 - size * Math.sin(angle - 0.45));
    context.lineTo(x1 - size * Math.cos(angle + 0.45), y1 - size * Math.sin(angle + 0.45));
    context.closePath();
    context.fillStyle = color;
    context.fill();
  }

  function drawStroke(samples, toCanvas, color, unit) {
    context.beginPath();
    samples.forEach((sample, index) => {
      const [x, y] = toCanvas(sample);
      if (index === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.strokeStyle = color;
    context.lineWidth = 2 * unit;
    context.stroke();
  }

  function drawTimeMarkers(toCanvas, radiusPx, unit) {
    for (const track of state.tracks) {
      if (track.region) {
        if (track.region.kind === "anchor") continue;
        // The handle where it is at the preview time, with the circle it carries.
        const [x, y] = toCanvas(regionHandleAt(track, previewTime));
        context.beginPath();
        context.arc(x, y, radiusPx(track.region.radius), 0, 2 * Math.PI);
        context.lineWidth = 2 * unit;
        context.strokeStyle = REGION_COLORS[track.region.kind];
        context.stroke();
        context.beginPath();
        context.arc(x, y, 6 * unit, 0, 2 * Math.PI);
        context.fillStyle = "#fff";
        context.fill();
        context.stroke();
        continue;
      }
      const position = track.static ? null : positionAt(track, previewTime);
      if (!position) continue;
      const [x, y] = toCanvas(position);
      context.beginPath();
      context.arc(x, y, 6 * unit, 0, 2 * Math.PI);
      context.fillStyle = position.visible ? "#fff" : "rgba(255,255,255,0.25)";
      context.fill();
      context.lineWidth = 2 * unit;
      context.strokeStyle = trackColor(track.id);
      context.stroke();
    }
  }

  // --- wiring ---

  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("pointerleave", onPointerLeave);
  element.addEventListener("keydown", onKeyDown, true);
  // A press anywhere in the editor but a field gives it the keys.
  element.addEventListener("pointerdown", (event) => {
    if (!(event.target instanceof window.HTMLInputElement)) focusKeys();
  });
  const resizeObserver = new ResizeObserver(() => {
    fitCanvas();
    render();
  });
  resizeObserver.observe(stage);

  const editor = {
    element,
    toolbar,
    state,
    keySink,

    exportJson: () => state.exportJson(),

    /** Load a saved value without notifying or making it undoable; empty text gives an empty editor. */
    load(source) {
      if (typeof source === "string" && !source.trim()) state.clear();
      else state.importJson(source);
      state.clearHistory();
      refresh();
    },

    /** Import a document as an undoable edit; throws the validation Error. */
    importJson(source) {
      state.importJson(source);
      commit();
    },

    undo() {
      if (state.undo()) commit();
    },

    redo() {
      if (state.redo()) commit();
    },

    clear() {
      if (state.tracks.length) attempt(() => state.clear());
    },

    deleteSelected() {
      const selected = state.selection;
      if (selected) attempt(() => state.deleteTrack(selected.trackId));
    },

    get mode() {
      return mode;
    },

    /** "draw", "move", "anchor" or "region" (the toolbar's mode buttons). */
    setMode,

    /** Radius of new region drags (and of the selected one when it is a region). */
    get radius() {
      return radius;
    },

    setRadius(value) {
      applyRadius(value);
    },

    get previewTime() {
      return previewTime;
    },

    /** Show positions at time t (seconds), or null for none. */
    setPreviewTime(time) {
      stopPlaying();
      previewTime = time === null ? null : Math.min(Math.max(0, Number(time)), state.clip.duration);
      refresh();
    },

    get playing() {
      return playing !== null;
    },

    play() {
      if (!playing) togglePlay();
    },

    pause() {
      if (playing) togglePlay();
    },

    /** Frame size in pixels; notifies only when it changes. */
    setFrameSize(frameWidth, frameHeight) {
      const { clip } = state;
      if (clip.width === frameWidth && clip.height === frameHeight) return;
      try {
        state.setClip({ width: frameWidth, height: frameHeight }, { record: false });
        commit();
      } catch (error) {
        showError(error.message);
      }
    },

    /** Show an image (URL, or null to remove) under the tracks. Resolves when it is shown. */
    setBackground(url) {
      if (!url) {
        background = null;
        render();
        return Promise.resolve();
      }
      return new Promise((resolve) => {
        const image = new Image();
        image.onload = () => {
          background = image;
          if (sizeFromImage) editor.setFrameSize(image.naturalWidth, image.naturalHeight);
          refresh();
          resolve();
        };
        image.onerror = () => {
          showError(`could not load the image ${url}`);
          resolve();
        };
        image.src = url;
      });
    },

    addToolbarButton(text, title, onClick) {
      const added = button(text, title, onClick);
      toolbar.insertBefore(added, fileInput);
      return added;
    },

    showError,
    refresh,

    destroy() {
      stopPlaying();
      resizeObserver.disconnect();
      element.remove();
    },
  };

  refresh();
  return editor;
}
