// ComfyUI extension: the track editor canvas on the MotionStreamTrackEditor node. The node's
// STRING widget `tracks_json` holds the widget JSON, so tracks are saved with the workflow.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createTrackEditor } from "./track_editor_canvas.js";
import { isLive, publishLiveTracks } from "./live_control.js";
import { leaveDomWidgetPlace, takeOverDomWidgetPlace } from "./dom_widget_place.js";

const NODE_NAME = "MotionStreamTrackEditor";
const VALUE_WIDGET = "tracks_json";
const IMAGE_INPUT = "image";
// Where an uploaded background image is remembered ({filename, subfolder, type}); saved with the workflow.
const BACKGROUND_PROPERTY = "motionstream_background";
const EXECUTED_IMAGE_KEY = "motionstream_background";
const IMAGE_POLL_MS = 1000;
const MIN_EDITOR_HEIGHT = 380;

// Seconds of video each running stream has sent (counted from its frames messages): the clock that
// times region drags made while a stream runs, so they steer the chunks from now on.
const streamClocks = new Map(); // streaming node id -> {frames, fps}

function countStreamFrames(detail) {
  const { node, fps, chunk_index: chunkIndex, frames, frame_count: frameCount, done } = detail ?? {};
  if (node === undefined || node === null) return;
  const id = String(node);
  if (done) {
    streamClocks.delete(id);
    return;
  }
  const clock = chunkIndex === 0 || !streamClocks.has(id) ? { frames: 0, fps: 16 } : streamClocks.get(id);
  clock.frames += Array.isArray(frames) ? frames.length : Number.isFinite(frameCount) ? frameCount : 0;
  if (Number.isFinite(fps) && fps > 0) clock.fps = fps;
  streamClocks.set(id, clock);
}

/** Where the stream `node` feeds stands (seconds of video made), or null when none runs. */
function streamSeconds(node) {
  if (!isLive(node)) return null;
  let seconds = 0;
  for (const clock of streamClocks.values()) seconds = Math.max(seconds, clock.frames / clock.fps);
  return seconds;
}

function findWidget(node, name) {
  return node.widgets?.find((widget) => widget.name === name);
}

function hideWidget(widget) {
  widget.hidden = true; // current front end
  widget.computeSize = () => [0, -4]; // older LiteGraph layouts
}

// The pack's demo image, served by the pack, for a MotionStream Demo Image node that has not run yet.
const DEMO_IMAGE_NODE = "MotionStreamDemoImage";
const DEMO_IMAGE_ROUTE = "/motionstream/demo_image.png";

// Preview image of the node connected to the `image` input (LoadImage and friends set `imgs`).
function connectedImageUrl(node) {
  const slot = node.inputs?.findIndex((input) => input.name === IMAGE_INPUT) ?? -1;
  if (slot < 0 || node.inputs[slot].link === null || node.inputs[slot].link === undefined) return null;
  const source = node.getInputNode?.(slot);
  const shown = source?.imgs?.[0]?.src;
  if (shown) return shown;
  const isDemoImage = source?.comfyClass === DEMO_IMAGE_NODE || source?.type === DEMO_IMAGE_NODE;
  return isDemoImage ? api.apiURL(DEMO_IMAGE_ROUTE) : null;
}

function viewUrl(image) {
  if (!image?.filename) return null;
  const query = new URLSearchParams({
    filename: image.filename,
    subfolder: image.subfolder ?? "",
    type: image.type ?? "input",
  });
  return api.apiURL(`/view?${query}`);
}

async function uploadImage(file) {
  const form = new FormData();
  form.append("image", file);
  const response = await api.fetchApi("/upload/image", { method: "POST", body: form });
  if (!response.ok) throw new Error(`image upload failed (${response.status})`);
  const { name, subfolder = "", type = "input" } = await response.json();
  return { filename: name, subfolder, type };
}

function setUpEditor(node) {
  const valueWidget = findWidget(node, VALUE_WIDGET);
  if (!valueWidget) {
    console.warn(`MotionStream: ${NODE_NAME} has no '${VALUE_WIDGET}' widget; the track editor is disabled`);
    return;
  }
  hideWidget(valueWidget);
  const widthWidget = findWidget(node, "width");
  const heightWidget = findWidget(node, "height");
  const sizeFromWidgets = Boolean(widthWidget && heightWidget);

  const container = document.createElement("div");
  Object.assign(container.style, { width: "100%", height: "100%", boxSizing: "border-box" });
  const editor = createTrackEditor(container, {
    sizeFromImage: !sizeFromWidgets,
    onChange(json) {
      valueWidget.value = json;
      node.setDirtyCanvas?.(true, false);
      publishLiveTracks(node, json);
    },
    onInput(json) {
      publishLiveTracks(node, json);
    },
    liveClock: () => streamSeconds(node),
  });
  node.motionstreamEditor = editor;

  const editorWidget = node.addDOMWidget("track_editor", "motionstream_track_editor", container, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => MIN_EDITOR_HEIGHT,
  });
  // The option only keeps it out of the API prompt; this keeps it out of saved workflows too.
  editorWidget.serialize = false;

  function loadValue() {
    try {
      editor.load(valueWidget.value ?? "");
    } catch (error) {
      // Leave the stored value untouched until the user edits, so nothing is lost silently.
      editor.showError(`saved tracks not loaded: ${error.message}`);
    }
  }

  function syncFrameSize() {
    if (sizeFromWidgets) editor.setFrameSize(Number(widthWidget.value), Number(heightWidget.value));
  }
  for (const widget of sizeFromWidgets ? [widthWidget, heightWidget] : []) {
    const original = widget.callback;
    widget.callback = function (...args) {
      const result = original?.apply(this, args);
      syncFrameSize();
      return result;
    };
  }

  // The image a run actually used, when the node reports it: {"ui": {"motionstream_background": [image]}}.
  let executedImage = null;
  const onExecuted = node.onExecuted;
  node.onExecuted = function (output, ...rest) {
    const result = onExecuted?.call(this, output, ...rest);
    executedImage = output?.[EXECUTED_IMAGE_KEY]?.[0] ?? executedImage;
    syncBackground();
    return result;
  };

  let shownImageUrl = null;
  function syncBackground() {
    const url = connectedImageUrl(node) ?? viewUrl(executedImage) ?? viewUrl(node.properties?.[BACKGROUND_PROPERTY]);
    if (url === shownImageUrl) return;
    shownImageUrl = url;
    void editor.setBackground(url);
  }

  const picker = Object.assign(document.createElement("input"), { type: "file", accept: "image/*", hidden: true });
  picker.addEventListener("change", async () => {
    const file = picker.files?.[0];
    picker.value = "";
    if (!file) return;
    try {
      node.properties = node.properties ?? {};
      node.properties[BACKGROUND_PROPERTY] = await uploadImage(file);
      syncBackground();
    } catch (error) {
      editor.showError(error.message);
    }
  });
  container.append(picker);
  editor.addToolbarButton("Image…", "upload a background image (a connected image input takes precedence)", () =>
    picker.click(),
  );

  loadValue();
  syncFrameSize();
  syncBackground();
  const poll = setInterval(syncBackground, IMAGE_POLL_MS);

  // Widget values are restored during configure; read them once it has finished.
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    setTimeout(() => {
      takeOverDomWidgetPlace(node, editorWidget);
      loadValue();
      syncFrameSize();
      syncBackground();
    }, 0);
    return result;
  };

  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    leaveDomWidgetPlace(node, editorWidget);
    clearInterval(poll);
    editor.destroy();
    return onRemoved?.apply(this, args);
  };

  node.setSize?.([Math.max(node.size?.[0] ?? 0, 480), Math.max(node.size?.[1] ?? 0, 520)]);
}

app.registerExtension({
  name: "MotionStream.TrackEditor",
  setup() {
    api.addEventListener("execution_start", () => streamClocks.clear());
    api.addEventListener("motionstream.frames", (event) => countStreamFrames(event.detail));
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_NAME) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      setUpEditor(this);
      return result;
    };
  },
});
