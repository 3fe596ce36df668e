// Live steering: while a MotionStream streaming sampler runs, edits in a track editor that feeds it
// are POSTed to the server, which hands them to the running stream.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const STREAMING_NODE = "MotionStreamStreamingSampler";
const LIVE_TRACKS_ROUTE = "/motionstream/live_tracks";

// A stream takes edits only from the client that queued it: the server hands that client a token in
// the stream's frames messages (`live_token`), and every edit carries it and this client's id.
const RETRY_MS = 250; // after a 429 (the server is busy)

let currentPromptId = null;
// streaming node id (string) -> { promptId, token } of its run; token is null until the first frames arrive
const liveStreams = new Map();
// streaming node id -> { inFlight, pending tracks JSON }
const senders = new Map();

function nodeIdOf(detail) {
  // `executing` carries the node id, or an object with it in some front-end versions.
  const id = detail && typeof detail === "object" ? (detail.display_node ?? detail.node) : detail;
  return id === null || id === undefined ? null : String(id);
}

function isStreamingNode(nodeId) {
  const node = app.graph?.getNodeById?.(nodeId);
  return node?.comfyClass === STREAMING_NODE || node?.type === STREAMING_NODE;
}

function linkOrigin(graph, linkId) {
  const link = typeof graph.links?.get === "function" ? graph.links.get(linkId) : graph.links?.[linkId];
  return link?.origin_id;
}

// Whether `editorNode` is upstream of the streaming node. When the graph cannot tell (the node
// lives in a subgraph, say) the edit is sent anyway: the server ignores tracks it cannot use.
function feeds(editorNode, streamingNodeId) {
  const graph = app.graph;
  if (!graph?.getNodeById?.(streamingNodeId)) return true;
  const target = String(editorNode.id);
  const seen = new Set();
  const pending = [streamingNodeId];
  while (pending.length) {
    const node = graph.getNodeById(pending.pop());
    for (const input of node?.inputs ?? []) {
      if (input.link === null || input.link === undefined) continue;
      const origin = linkOrigin(graph, input.link);
      if (origin === undefined || origin === null || seen.has(String(origin))) continue;
      if (String(origin) === target) return true;
      seen.add(String(origin));
      pending.push(origin);
    }
  }
  return false;
}

function clientId() {
  return api.clientId ?? api.initialClientId ?? null;
}

function bodyFor(nodeId, stream, tracksJson) {
  const fields = [
    `"prompt_id":${JSON.stringify(stream.promptId)}`,
    `"node_id":${JSON.stringify(nodeId)}`,
    `"token":${JSON.stringify(stream.token)}`,
    `"client_id":${JSON.stringify(clientId())}`,
  ];
  return `{${fields.join(",")},"tracks":${tracksJson}}`;
}

async function errorOf(response) {
  try {
    return (await response.json())?.error ?? "";
  } catch {
    return "";
  }
}

// One request per stream at a time; edits made meanwhile collapse into the latest one. Edits made
// before the stream's token has arrived wait for it.
async function flush(nodeId) {
  const sender = senders.get(nodeId);
  if (!sender || sender.inFlight) return;
  sender.inFlight = true;
  try {
    while (sender.pending !== null) {
      const stream = liveStreams.get(nodeId);
      if (!stream) {
        sender.pending = null; // the stream ended
        break;
      }
      if (!stream.token) break; // sent once the frames bring the token
      const tracksJson = sender.pending;
      sender.pending = null;
      try {
        const response = await api.fetchApi(LIVE_TRACKS_ROUTE, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: bodyFor(nodeId, stream, tracksJson),
        });
        if (response.ok) continue;
        console.warn(`MotionStream: live tracks rejected (${response.status}): ${await errorOf(response)}`);
        if (response.status === 404) {
          liveStreams.delete(nodeId);
        } else if (response.status === 429 && sender.pending === null) {
          sender.pending = tracksJson; // send it again shortly, unless a newer edit comes meanwhile
          await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        }
      } catch (error) {
        console.warn("MotionStream: could not send live tracks", error);
      }
    }
  } finally {
    sender.inFlight = false;
  }
}

/** Whether a streaming run that `editorNode` feeds is in progress. */
export function isLive(editorNode) {
  return [...liveStreams.keys()].some((nodeId) => feeds(editorNode, nodeId));
}

/** Send the editor's widget JSON to every running stream it feeds; does nothing when none runs. */
export function publishLiveTracks(editorNode, tracksJson) {
  for (const nodeId of liveStreams.keys()) {
    if (!feeds(editorNode, nodeId)) continue;
    let sender = senders.get(nodeId);
    if (!sender) senders.set(nodeId, (sender = { inFlight: false, pending: null }));
    sender.pending = tracksJson;
    void flush(nodeId);
  }
}

function endAll() {
  liveStreams.clear();
  for (const sender of senders.values()) sender.pending = null;
}

app.registerExtension({
  name: "MotionStream.LiveControl",
  setup() {
    api.addEventListener("execution_start", (event) => {
      currentPromptId = event.detail?.prompt_id ?? null;
      endAll();
    });
    api.addEventListener("executing", (event) => {
      // Nodes run one at a time, so a new `executing` ends the previous node's stream.
      endAll();
      const nodeId = nodeIdOf(event.detail);
      if (nodeId !== null && isStreamingNode(nodeId)) liveStreams.set(nodeId, { promptId: currentPromptId, token: null });
    });
    for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(type, endAll);
    }
    // A stream's first status brings its token before its first frames; its last one ends it.
    api.addEventListener("motionstream.status", (event) => {
      const { node, prompt_id: messagePromptId, state, live_token: liveToken } = event.detail ?? {};
      if (node === undefined || node === null) return;
      const nodeId = String(node);
      if (state !== "streaming") {
        liveStreams.delete(nodeId);
        return;
      }
      if (typeof liveToken !== "string") return;
      liveStreams.set(nodeId, { promptId: messagePromptId ?? currentPromptId, token: liveToken });
      void flush(nodeId);
    });
    api.addEventListener("motionstream.frames", (event) => {
      const { node, prompt_id: messagePromptId, done, live_token: liveToken } = event.detail ?? {};
      if (node === undefined || node === null) return;
      const nodeId = String(node);
      if (done) {
        liveStreams.delete(nodeId);
        return;
      }
      const promptId = messagePromptId ?? currentPromptId;
      const previous = liveStreams.get(nodeId);
      const token = typeof liveToken === "string" ? liveToken : previous?.promptId === promptId ? previous.token : null;
      liveStreams.set(nodeId, { promptId, token });
      if (token) void flush(nodeId);
    });
  },
});
