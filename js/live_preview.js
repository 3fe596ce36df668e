// ComfyUI extension: plays the frames a MotionStreamStreamingSampler streams over the websocket
// (`motionstream.frames` events) at the clip's fps while the run is still going, with a Stop button
// that ends the stream cleanly (the node returns with its video file; Cancel still interrupts).
// `motionstream.status` events say when a stream starts and how it ended (done, stopped, cancelled).
// A stream with a prompt schedule offers its prompts in its first status: the preview then shows a
// prompt row that switches the prompt from the next chunk on (and takes new text when the schedule has
// a text encoder).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { leaveDomWidgetPlace, takeOverDomWidgetPlace } from "./dom_widget_place.js";

const NODE_NAME = "MotionStreamStreamingSampler";
const FRAMES_EVENT = "motionstream.frames";
const STATUS_EVENT = "motionstream.status";
const STOP_ROUTE = "/motionstream/stop";
const PROMPT_ROUTE = "/motionstream/live_prompt";
// About two minutes at 16 fps; older frames are dropped so a long stream cannot exhaust memory.
const MAX_KEPT_FRAMES = 2000;
const MIN_PREVIEW_HEIGHT = 200;
const FOLDED_PREVIEW_HEIGHT = 26;
// Live means live: with more than this many chunks waiting, the player skips to the newest chunk.
const BEHIND_CHUNKS = 3;
const KEPT_LATENCIES = 20;
const ENDED_STATES = new Set(["done", "stopped", "cancelled", "failed"]);

const previewNodes = new Set();

function frameUrl(frame) {
  return frame.startsWith("data:") ? frame : `data:image/jpeg;base64,${frame}`;
}

function styledButton(label, title) {
  const button = Object.assign(document.createElement("button"), { type: "button", textContent: label, title });
  Object.assign(button.style, { flex: "0 0 auto", font: "12px sans-serif", padding: "1px 8px", cursor: "pointer" });
  return button;
}

/**
 * The prompt row of a stream that offers prompt switches ({ prompts: [{ index, start }], text }): a list of
 * the schedule's prompts with a Switch button, and a text field for a new prompt when the stream can encode
 * text. `choose({ index } or { text })` sends the switch.
 */
function createPromptRow(choose) {
  const row = document.createElement("div");
  const select = document.createElement("select");
  const switchButton = styledButton("Switch", "Switch the stream to this prompt of its schedule from the next chunk on");
  const text = Object.assign(document.createElement("input"), { type: "text", placeholder: "new prompt, Enter to switch" });
  const sendButton = styledButton("Send", "Switch the stream to this new prompt from the next chunk on");
  const note = document.createElement("div");
  Object.assign(row.style, { display: "none", flexWrap: "wrap", alignItems: "center", gap: "4px", font: "12px sans-serif" });
  Object.assign(select.style, { font: "12px sans-serif", maxWidth: "9em" });
  Object.assign(text.style, { flex: "1 1 8em", minWidth: "4em", font: "12px sans-serif" });
  Object.assign(note.style, { flexBasis: "100%", font: "12px monospace", opacity: "0.85", overflowWrap: "anywhere" });
  row.append(select, switchButton, text, sendButton, note);
  let offered = null;

  function sendText() {
    const value = text.value.trim();
    if (!value) return;
    choose({ text: value });
  }
  switchButton.addEventListener("click", () => choose({ index: Number(select.value) }));
  sendButton.addEventListener("click", sendText);
  // Typing goes to the field, not to the graph's keyboard shortcuts.
  text.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter") sendText();
  });

  return {
    row,
    offer(live) {
      offered = live && Array.isArray(live.prompts) && live.prompts.length ? live : null;
      select.replaceChildren(
        ...(offered?.prompts ?? []).map(({ index, start }) =>
          Object.assign(document.createElement("option"), {
            value: String(index),
            textContent: `prompt ${Number(index) + 1} (${Number(start)} s)`,
          }),
        ),
      );
      text.style.display = sendButton.style.display = offered?.text ? "" : "none";
      text.value = "";
      note.textContent = "";
    },
    show(streaming) {
      row.style.display = offered && streaming ? "flex" : "none";
    },
    note(message) {
      note.textContent = message;
    },
  };
}

/**
 * A small frame player: push() chunks of base64 JPEG frames, it plays them in order at the given
 * fps, waits when it runs out while the stream goes on, skips to the newest chunk when it falls
 * behind, and loops the clip once the stream has ended. `onStop({ promptId, token })` is called by
 * the Stop button; `onPrompt({ promptId, token }, { index } or { text })` by the prompt row.
 */
export function createFramePlayer(container, { onStop, onPrompt } = {}) {
  const canvas = document.createElement("canvas");
  const bar = document.createElement("div");
  const status = document.createElement("div");
  const stopButton = document.createElement("button");
  stopButton.type = "button";
  stopButton.textContent = "Stop";
  stopButton.title = "End the stream after the chunk in progress and keep its video file (Cancel interrupts it)";
  Object.assign(canvas.style, { width: "100%", flex: "1 1 auto", minHeight: "0", objectFit: "contain", background: "#111" });
  Object.assign(bar.style, { display: "flex", alignItems: "center", gap: "6px", minHeight: "22px" });
  // Wraps rather than hides the end of the line (the drag-to-screen latency, the file) at narrow node widths.
  Object.assign(status.style, {
    font: "12px monospace", opacity: "0.85", whiteSpace: "normal", overflowWrap: "anywhere", flex: "1 1 auto",
  });
  Object.assign(stopButton.style, { flex: "0 0 auto", font: "12px sans-serif", padding: "1px 10px", cursor: "pointer" });
  Object.assign(container.style, { display: "flex", flexDirection: "column", gap: "2px", height: "100%" });
  bar.append(status, stopButton);
  const prompts = createPromptRow((choice) => onPrompt?.({ promptId, token }, choice));
  container.append(canvas, bar, prompts.row);
  const context = canvas.getContext("2d");

  let frames = [];
  let playhead = 0;
  let fps = 16;
  let state = "waiting"; // streaming, stopping, then done, stopped, cancelled or failed
  let ended = false;
  let promptId = null;
  let token = null;
  let chunkIndex = null;
  let largestChunk = 0;
  let skipped = 0;
  let shownVersion = 0;
  let file = null;
  let problem = null;
  let lastFrameTime = 0;
  let animation = null;
  const latencies = [];

  function describe() {
    if (state === "waiting") {
      status.textContent = "waiting for frames";
    } else {
      const parts = [`${frames.length} frames`, `${fps} fps`];
      if (chunkIndex !== null) parts.unshift(`chunk ${chunkIndex}`);
      parts.push(state);
      if (skipped) parts.push(`skipped ${skipped}`);
      if (latencies.length) parts.push(`edit → screen ${Math.round(latencies.at(-1).totalMs)} ms`);
      if (file) parts.push(file.filename);
      if (problem) parts.push(problem);
      status.textContent = parts.join(" · ");
    }
    const canStop = (state === "streaming" || state === "waiting") && !ended && Boolean(token);
    stopButton.disabled = !canStop;
    stopButton.style.cursor = canStop ? "pointer" : "default";
    stopButton.style.opacity = canStop ? "1" : "0.5";
    stopButton.textContent = state === "stopping" ? "Stopping…" : "Stop";
    prompts.show(!ended && Boolean(token) && state !== "stopping");
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

  // The first frame made with a live edit is on screen: the drag-to-screen latency is the server's part
  // (route received the edit -> frames message sent) plus the browser's (message arrived -> frame drawn).
  function measure(edit, now) {
    const displayMs = now - edit.arrivedAt;
    latencies.push({ version: edit.version, serverMs: edit.serverMs, displayMs, totalMs: edit.serverMs + displayMs });
    if (latencies.length > KEPT_LATENCIES) latencies.shift();
    describe();
  }

  function tick(now) {
    animation = requestAnimationFrame(tick);
    if (now - lastFrameTime < 1000 / fps) return;
    if (playhead >= frames.length) {
      if (!ended || frames.length === 0) return; // wait for the next chunk
      playhead = 0;
    }
    const image = frames[playhead];
    if (draw(image)) {
      if (image.motionstreamEdit) {
        measure(image.motionstreamEdit, performance.now());
        image.motionstreamEdit = null;
      }
      playhead += 1;
      lastFrameTime = now;
    }
  }

  function reset(newPromptId) {
    player.showFinishedVideo(false);
    frames = [];
    playhead = 0;
    state = "waiting";
    ended = false;
    promptId = newPromptId;
    token = null;
    chunkIndex = null;
    largestChunk = 0;
    skipped = 0;
    shownVersion = 0;
    file = null;
    problem = null;
    prompts.offer(null);
  }

  function follow(detail) {
    if (detail.prompt_id !== promptId) reset(detail.prompt_id);
    if (typeof detail.live_token === "string") token = detail.live_token;
  }

  const player = {
    canvas,
    status,
    stopButton,
    promptRow: prompts.row,
    latencies,
    get frameCount() {
      return frames.length;
    },
    get playhead() {
      return playhead;
    },
    get state() {
      return state;
    },
    get skippedFrames() {
      return skipped;
    },
    get stream() {
      return { promptId, token };
    },

    push(detail) {
      follow(detail);
      if (Number(detail.fps) > 0) fps = Number(detail.fps);
      const chunk = [];
      for (const frame of detail.frames ?? []) {
        const image = new Image();
        image.src = frameUrl(frame);
        chunk.push(image);
      }
      const version = Number(detail.tracks_version ?? 0);
      if (version > shownVersion && chunk.length) {
        shownVersion = version;
        chunk[0].motionstreamEdit = { version, serverMs: Number(detail.edit_to_frames_ms ?? 0), arrivedAt: performance.now() };
      }
      frames.push(...chunk);
      largestChunk = Math.max(largestChunk, chunk.length);
      const waiting = frames.length - playhead;
      if (!detail.done && chunk.length && waiting > BEHIND_CHUNKS * largestChunk) {
        const newest = frames.length - chunk.length; // behind: drop to the newest chunk
        skipped += newest - playhead;
        playhead = newest;
      }
      if (frames.length > MAX_KEPT_FRAMES) {
        const dropped = frames.length - MAX_KEPT_FRAMES;
        frames = frames.slice(dropped);
        playhead = Math.max(0, playhead - dropped);
      }
      chunkIndex = detail.chunk_index ?? chunkIndex;
      if (detail.done) {
        ended = true;
        if (!ENDED_STATES.has(state)) state = "done";
      } else if (state === "waiting") {
        state = "streaming";
      }
      describe();
      if (animation === null) animation = requestAnimationFrame(tick);
    },

    /** A `motionstream.status` message: { state, prompt_id, live_token?, frames?, file?, error? }. */
    setStatus(detail) {
      follow(detail);
      const next = String(detail.state ?? ""); // "streaming" only brings the token: Stop works before the frames
      if (next === "streaming" && detail.live_prompts) prompts.offer(detail.live_prompts);
      if (ENDED_STATES.has(next)) {
        state = next;
        ended = true;
        file = detail.file ?? file;
      }
      describe();
    },

    /** Run `runPromptId` ended without a final status from the node (ComfyUI's interrupt or error events). */
    endRun(endState, runPromptId) {
      if (ended || (runPromptId != null && runPromptId !== promptId)) return;
      if (state === "waiting" && frames.length === 0 && !token) return; // this node's stream never started
      state = endState;
      ended = true;
      describe();
    },

    /** How the server answered a prompt switch: shown in the prompt row. */
    promptAnswered(message) {
      prompts.note(message);
    },

    stopFailed(message) {
      if (state === "stopping") state = "streaming";
      problem = message;
      describe();
    },

    stop() {
      if (animation !== null) cancelAnimationFrame(animation);
      animation = null;
    },

    /** Once the run's video file shows in ComfyUI's own preview below, the live canvas folds away (status and Stop stay). */
    finishedVideoShown: false,
    showFinishedVideo(shown) {
      player.finishedVideoShown = shown;
      canvas.style.display = shown ? "none" : "";
      container.style.height = shown ? "auto" : "100%";
    },
  };

  stopButton.addEventListener("click", () => {
    if (stopButton.disabled) return;
    state = "stopping";
    problem = null;
    describe();
    onStop?.({ promptId, token });
  });
  describe();
  return player;
}

/**
 * POSTs `fields` for the stream of `node` (its ids, token and this client's id go with them). Returns
 * { ok, status, error } (error: the server's message, if any); a network failure throws.
 */
async function postToStream(route, node, stream, fields = {}) {
  const response = await api.fetchApi(route, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      prompt_id: stream.promptId,
      node_id: String(node.id),
      token: stream.token,
      client_id: api.clientId ?? api.initialClientId ?? null,
      ...fields,
    }),
  });
  let error = "";
  if (!response.ok) {
    try {
      error = (await response.json())?.error ?? "";
    } catch {
      // not JSON
    }
  }
  return { ok: response.ok, status: response.status, error };
}

async function requestStop(node, stream) {
  const player = node.motionstreamPlayer;
  try {
    const { ok, status, error } = await postToStream(STOP_ROUTE, node, stream);
    if (ok || status === 404) return; // 404: it ended meanwhile
    console.warn(`MotionStream: Stop refused (${status}): ${error}`);
    player.stopFailed(`Stop refused: ${error || status}`);
  } catch (error) {
    console.warn("MotionStream: could not send Stop", error);
    player.stopFailed("Stop not sent");
  }
}

async function requestPromptSwitch(node, stream, choice) {
  const player = node.motionstreamPlayer;
  const what = choice.text !== undefined ? "the new prompt" : `prompt ${choice.index + 1}`;
  try {
    const { ok, status, error } = await postToStream(PROMPT_ROUTE, node, stream, choice);
    player.promptAnswered(ok ? `${what} from the next chunk` : `${what} refused: ${error || status}`);
  } catch (error) {
    console.warn("MotionStream: could not send the prompt switch", error);
    player.promptAnswered(`${what} not sent`);
  }
}

function setUpPreview(node) {
  const container = document.createElement("div");
  const player = createFramePlayer(container, {
    onStop: (stream) => requestStop(node, stream),
    onPrompt: (stream, choice) => requestPromptSwitch(node, stream, choice),
  });
  node.motionstreamPlayer = player;
  const previewWidget = node.addDOMWidget("live_preview", "motionstream_live_preview", container, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => (player.finishedVideoShown ? FOLDED_PREVIEW_HEIGHT : MIN_PREVIEW_HEIGHT),
  });
  // The node's result is its video file, which ComfyUI previews under the node: no second player above it.
  const onExecuted = node.onExecuted;
  node.onExecuted = function (output, ...rest) {
    const result = onExecuted?.apply(this, [output, ...rest]);
    if (output?.images?.length && ENDED_STATES.has(player.state)) {
      player.showFinishedVideo(true);
      node.setSize?.([node.size[0], node.computeSize?.()[1] ?? node.size[1]]);
      node.setDirtyCanvas?.(true, true);
    }
    return result;
  };
  // The option only keeps it out of the API prompt; this keeps it out of saved workflows too.
  previewWidget.serialize = false;
  previewNodes.add(node);
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    setTimeout(() => takeOverDomWidgetPlace(node, previewWidget), 0);
    return result;
  };
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    leaveDomWidgetPlace(node, previewWidget);
    player.stop();
    previewNodes.delete(node);
    return onRemoved?.apply(this, args);
  };
}

function playersOf(nodeId) {
  // Node ids are only final once a node is in the graph, so they are matched at event time.
  return [...previewNodes].filter((node) => String(node.id) === String(nodeId)).map((node) => node.motionstreamPlayer);
}

app.registerExtension({
  name: "MotionStream.LivePreview",
  setup() {
    api.addEventListener(FRAMES_EVENT, (event) => {
      const detail = event.detail ?? {};
      for (const player of playersOf(detail.node)) player.push(detail);
    });
    api.addEventListener(STATUS_EVENT, (event) => {
      const detail = event.detail ?? {};
      for (const player of playersOf(detail.node)) player.setStatus(detail);
    });
    // Fallbacks for runs that end before the node could say so (ComfyUI's Cancel, a failure elsewhere).
    for (const [type, endState] of [["execution_interrupted", "cancelled"], ["execution_error", "failed"]]) {
      api.addEventListener(type, (event) => {
        for (const node of previewNodes) node.motionstreamPlayer.endRun(endState, event.detail?.prompt_id);
      });
    }
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
