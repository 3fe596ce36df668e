// ComfyUI extension: plays the frames a MotionStreamStreamingSampler streams over the websocket
// (`motionstream.frames` events) at the clip's fps while the run is still going.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_NAME = "MotionStreamStreamingSampler";
const FRAMES_EVENT = "motionstream.frames";
// About two minutes at 16 fps; older frames are dropped so a long stream cannot exhaust memory.
const MAX_KEPT_FRAMES = 2000;
const MIN_PREVIEW_HEIGHT = 200;

const previewNodes = new Set();

function frameUrl(frame) {
  return frame.startsWith("data:") ? frame : `data:image/jpeg;base64,${frame}`;
}

/**
 * A small frame player: push() chunks of base64 JPEG frames, it plays them in order at the given
 * fps, waits when it runs out while the stream goes on, and loops the clip once the stream is done.
 */
export function createFramePlayer(container) {
  const canvas = document.createElement("canvas");
  const status = document.createElement("div");
  Object.assign(canvas.style, { width: "100%", flex: "1 1 auto", minHeight: "0", objectFit: "contain", background: "#111" });
  Object.assign(status.style, { font: "12px monospace", opacity: "0.85", whiteSpace: "nowrap", overflow: "hidden" });
  Object.assign(container.style, { display: "flex", flexDirection: "column", gap: "2px", height: "100%" });
  container.append(canvas, status);
  const context = canvas.getContext("2d");

  let frames = [];
  let playhead = 0;
  let fps = 16;
  let done = false;
  let promptId = null;
  let chunkIndex = null;
  let lastFrameTime = 0;
  let animation = null;

  function describe() {
    const parts = [`${frames.length} frames`, `${fps} fps`];
    if (chunkIndex !== null) parts.unshift(`chunk ${chunkIndex}`);
    parts.push(done ? "done" : "streaming");
    status.textContent = parts.join(" · ");
  }

  function draw(image) {
    if (!image.complete || !image.naturalWidth) return false;
    if (canvas.width !== image.naturalWidth || canvas.height !== image.naturalHeight) {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
    }
    context.drawImage(image, 0, 0);
    return true;
  }

  function tick(now) {
    animation = requestAnimationFrame(tick);
    if (now - lastFrameTime < 1000 / fps) return;
    if (playhead >= frames.length) {
      if (!done || frames.length === 0) return; // wait for the next chunk
      playhead = 0;
    }
    if (draw(frames[playhead])) {
      playhead += 1;
      lastFrameTime = now;
    }
  }

  function reset() {
    frames = [];
    playhead = 0;
    done = false;
    chunkIndex = null;
  }

  const player = {
    canvas,
    status,
    get frameCount() {
      return frames.length;
    },
    get playhead() {
      return playhead;
    },

    push(detail) {
      if (detail.prompt_id !== promptId) {
        reset();
        promptId = detail.prompt_id;
      }
      if (Number(detail.fps) > 0) fps = Number(detail.fps);
      for (const frame of detail.frames ?? []) {
        const image = new Image();
        image.src = frameUrl(frame);
        frames.push(image);
      }
      if (frames.length > MAX_KEPT_FRAMES) {
        const dropped = frames.length - MAX_KEPT_FRAMES;
        frames = frames.slice(dropped);
        playhead = Math.max(0, playhead - dropped);
      }
      chunkIndex = detail.chunk_index ?? chunkIndex;
      done = Boolean(detail.done);
      describe();
      if (animation === null) animation = requestAnimationFrame(tick);
    },

    stop() {
      if (animation !== null) cancelAnimationFrame(animation);
      animation = null;
    },
  };
  status.textContent = "waiting for frames";
  return player;
}

function setUpPreview(node) {
  const container = document.createElement("div");
  const player = createFramePlayer(container);
  node.motionstreamPlayer = player;
  const previewWidget = node.addDOMWidget("live_preview", "motionstream_live_preview", container, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => MIN_PREVIEW_HEIGHT,
  });
  // The option only keeps it out of the API prompt; this keeps it out of saved workflows too.
  previewWidget.serialize = false;
  previewNodes.add(node);
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    player.stop();
    previewNodes.delete(node);
    return onRemoved?.apply(this, args);
  };
}

app.registerExtension({
  name: "MotionStream.LivePreview",
  setup() {
    api.addEventListener(FRAMES_EVENT, (event) => {
      const detail = event.detail ?? {};
      // Node ids are only final once a node is in the graph, so they are matched at event time.
      for (const node of previewNodes) {
        if (String(node.id) === String(detail.node)) node.motionstreamPlayer.push(detail);
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_NAME) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      setUpPreview(this);
      return result;
    };
  },
});
