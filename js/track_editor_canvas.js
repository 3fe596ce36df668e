// The track editor's DOM: toolbar, canvas drawing and pointer/keyboard handling over a
// TrackEditorState. No ComfyUI imports, so the same code runs in ComfyUI and on a plain test page.

import { TrackEditorState, positionAt } from "./track_editor_state.js";

const HANDLE_RADIUS_PX = 7;
const PATH_HIT_PX = 6;
// A press that moves less than this is a click, not a drag.
const CLICK_SLOP_PX = 4;
const STYLE_ELEMENT_ID = "motionstream-track-editor-style";

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
`;

const HINT = "drag: track · shift-click: anchor · drag a point or line: move · Del · Ctrl+Z";

const CANVAS_HELP = [
  "drag: draw a moving track (it spans the clip; set start/len below)",
  "shift-click or Anchor mode: pin a static point",
  "drag a point: move it · drag a line: move the track · alt-drag: draw across a track",
  "V: hide/show the selected point until the next one · Del: delete track · Esc: deselect",
].join("\n");

function injectStyleSheet(document) {
  if (document.getElementById(STYLE_ELEMENT_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ELEMENT_ID;
  style.textContent = STYLE_SHEET;
  document.head.appendChild(style);
}

function trackColor(trackId) {
  return `hsl(${(trackId * 137.508) % 360}, 85%, 60%)`;
}

function formatNumber(value, decimals = 4) {
  return value.toFixed(decimals);
}

/**
 * Build an editor inside `container`.
 * options: width/height (frame size in pixels), fps, duration (seconds), onChange(json) called after
 * every committed edit, onInput(json) called (once per animation frame at most) while a drag is in
 * progress with the document as it would be if the drag ended now, sizeFromImage (default true: a
 * background image sets the frame size).
 * Returns the editor API (state, exportJson, load, importJson, setBackground, ...).
 */
export function createTrackEditor(container, options = {}) {
  const { width, height, fps, duration, onChange = () => {}, onInput = null, sizeFromImage = true } = options;
  const document = container.ownerDocument;
  injectStyleSheet(document);
  const state = new TrackEditorState({ width, height, fps, duration });

  const element = make("div", { className: "ms-track-editor", tabIndex: 0 });
  const toolbar = make("div", { className: "ms-row" });
  const timingRow = make("div", { className: "ms-row" });
  const stage = make("div", { className: "ms-stage" });
  const canvas = make("canvas", { title: CANVAS_HELP });
  const status = make("div", { className: "ms-status" });
  stage.append(canvas);
  element.append(toolbar, timingRow, stage, status);
  container.append(element);
  const context = canvas.getContext("2d");

  let anchorMode = false;
  let gesture = null;
  let gestureCount = 0;
  let background = null;
  let previewTime = null;
  let renderPending = false;

  // --- toolbar ---

  const trackModeButton = button("Track", "drag on the image to draw a moving track", () => setAnchorMode(false));
  const anchorModeButton = button("Anchor", "click to pin a static point (or shift-click in Track mode)", () =>
    setAnchorMode(true),
  );
  const undoButton = button("Undo", "Ctrl+Z", () => editor.undo());
  const redoButton = button("Redo", "Ctrl+Shift+Z", () => editor.redo());
  const deleteButton = button("Delete", "delete the selected track (Del)", () => editor.deleteSelected());
  const clearButton = button("Clear", "remove all tracks", () => editor.clear());
  const importButton = button("Import", "load tracks from a .json file", () => fileInput.click());
  const exportButton = button("Export", "save the tracks as a .json file", () => downloadJson());
  const fileInput = make("input", { type: "file", accept: ".json,application/json", hidden: true });
  fileInput.addEventListener("change", () => importFile(fileInput.files?.[0]));
  toolbar.append(
    trackModeButton,
    anchorModeButton,
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
  const timeSlider = make("input", { type: "range", min: 0, step: "any", title: "preview positions at time t" });
  const timeLabel = make("span", { textContent: "t –" });
  timeSlider.addEventListener("input", () => {
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
    element.addEventListener("click", (event) => {
      event.preventDefault();
      onClick();
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

  function setAnchorMode(enabled) {
    anchorMode = enabled;
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

  // --- view refresh ---

  function refresh() {
    const { clip, selection } = state;
    trackModeButton.classList.toggle("ms-active", !anchorMode);
    anchorModeButton.classList.toggle("ms-active", anchorMode);
    undoButton.disabled = !state.canUndo;
    redoButton.disabled = !state.canRedo;
    deleteButton.disabled = !selection;
    clearButton.disabled = state.tracks.length === 0;
    const timing = selection && state.trackTiming(selection.trackId);
    setInputValue(startInput, timing?.start);
    setInputValue(lengthInput, timing && state.getTrack(selection.trackId).keyframes.length > 1 ? timing.duration : undefined);
    setInputValue(clipInput, clip.duration);
    setInputValue(fpsInput, clip.fps);
    timeSlider.max = String(clip.duration);
    timeLabel.textContent = previewTime === null ? "t –" : `t ${previewTime.toFixed(2)} s`;
    status.classList.remove("ms-error");
    status.textContent = describeSelection() ?? HINT;
    fitCanvas();
    render();
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

  function onPointerDown(event) {
    if (event.button !== 0 || gesture) return;
    event.preventDefault();
    element.focus({ preventScroll: true });
    const point = normalisedPoint(event);
    const hit = event.altKey ? null : hitTest(point, point.rect);
    gestureCount += 1;
    if (hit) {
      state.select(hit.trackId, hit.keyframeIndex);
      gesture = { kind: hit.keyframeIndex === null ? "move-track" : "move-keyframe", ...hit, last: point, moved: false };
    } else if (anchorMode || event.shiftKey) {
      attempt(() => state.addAnchor(point.x, point.y));
      return;
    } else {
      gesture = { kind: "draw", start: point, samples: [sampleOf(event, point)], moved: false };
    }
    gesture.pointerId = event.pointerId;
    gesture.coalesce = `gesture-${gestureCount}`;
    canvas.setPointerCapture?.(event.pointerId);
    refresh();
  }

  function sampleOf(event, point) {
    return { t: event.timeStamp / 1000, x: point.x, y: point.y };
  }

  function onPointerMove(event) {
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    const point = normalisedPoint(event);
    if (gesture.kind === "draw") {
      const events = event.getCoalescedEvents?.() ?? [];
      for (const coalesced of events.length ? events : [event]) {
        gesture.samples.push(sampleOf(coalesced, normalisedPoint(coalesced)));
      }
      gesture.moved ||= distancePx(point, gesture.start, point.rect) >= CLICK_SLOP_PX;
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
    status.textContent = describeSelection() ?? HINT;
    scheduleRender();
  }

  function onPointerUp(event) {
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    const finished = gesture;
    gesture = null;
    canvas.releasePointerCapture?.(event.pointerId);
    if (finished.kind === "draw") {
      if (event.type === "pointercancel") return refresh();
      if (!finished.moved) {
        state.clearSelection();
        return refresh();
      }
      finished.samples.push(sampleOf(event, normalisedPoint(event)));
      attempt(() => state.addTrackFromDrag(finished.samples));
    } else if (finished.moved) {
      commit();
    } else {
      refresh();
    }
  }

  // --- keyboard ---

  function onKeyDown(event) {
    if (event.target instanceof HTMLInputElement) return;
    const key = event.key.toLowerCase();
    const command = event.ctrlKey || event.metaKey;
    let handled = true;
    if (command && key === "z" && !event.shiftKey) editor.undo();
    else if (command && ((key === "z" && event.shiftKey) || key === "y")) editor.redo();
    else if (key === "delete" || key === "backspace") editor.deleteSelected();
    else if (key === "escape") {
      state.clearSelection();
      refresh();
    } else if (key === "v" && !command) toggleSelectedVisibility();
    else handled = false;
    if (handled) {
      // Keep the host (ComfyUI's graph undo, node deletion) from acting on the same keys.
      event.preventDefault();
      event.stopPropagation();
    }
  }

  function toggleSelectedVisibility() {
    const selected = state.selectedKeyframe();
    if (!selected || state.selection.keyframeIndex === null) return;
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
        onInput(gesture.kind === "draw" ? state.exportJsonWithDraft(gesture.samples) : state.exportJson());
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
    const selectedId = state.selection?.trackId;
    for (const track of state.tracks) {
      drawTrack(track, track.id === selectedId, toCanvas, unit);
    }
    if (gesture?.kind === "draw") drawStroke(gesture.samples, toCanvas, unit);
    if (previewTime !== null) drawTimeMarkers(toCanvas, unit);
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
    for (let index = 1; index < points.length; index += 1) {
      const hidden = track.keyframes[index - 1].visible === false;
      context.setLineDash(hidden ? [4 * unit, 4 * unit] : []);
      strokeSegment(points[index - 1], points[index], selected ? "#fff" : "rgba(0,0,0,0.6)", (selected ? 5 : 4) * unit);
      strokeSegment(points[index - 1], points[index], color, (selected ? 3 : 2) * unit);
    }
    context.setLineDash([]);
    if (points.length > 1) drawArrowHead(points[points.length - 2], points[points.length - 1], color, unit);
    points.forEach(([x, y], index) => {
      const radius = (index === 0 ? 5 : selected ? 3.5 : 2.5) * unit;
      context.beginPath();
      context.arc(x, y, radius, 0, 2 * Math.PI);
      context.fillStyle = index === 0 ? color : selected ? "#fff" : color;
      context.fill();
      context.lineWidth = unit;
      context.strokeStyle = "#000";
      context.stroke();
    });
    drawKeyframeRing(track, points, unit);
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

  function drawStroke(samples, toCanvas, unit) {
    context.beginPath();
    samples.forEach((sample, index) => {
      const [x, y] = toCanvas(sample);
      if (index === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.strokeStyle = "#fff";
    context.lineWidth = 2 * unit;
    context.stroke();
  }

  function drawTimeMarkers(toCanvas, unit) {
    for (const track of state.tracks) {
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
  element.addEventListener("keydown", onKeyDown);
  const resizeObserver = new ResizeObserver(() => {
    fitCanvas();
    render();
  });
  resizeObserver.observe(stage);

  const editor = {
    element,
    toolbar,
    state,

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
      resizeObserver.disconnect();
      element.remove();
    },
  };

  refresh();
  return editor;
}
