// Live steering: while a MotionStream streaming sampler runs, edits in a track editor that feeds it
// are POSTed to the server, which hands them to the running stream.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const STREAMING_NODE = "MotionStreamStreamingSampler";
const LIVE_TRACKS_ROUTE = "/motionstream/live_tracks";

let currentPromptId = null;
// streaming node id (string) -> prompt id of its run
const liveStreams = new Map();
// streaming node id -> { inFlight, pending body }
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

// One request per stream at a time; edits made meanwhile collapse into the latest one.
async function send(streamingNodeId, body) {
  let sender = senders.get(streamingNodeId);
  if (!sender) senders.set(streamingNodeId, (sender = { inFlight: false, pending: null }));
  sender.pending = body;
  if (sender.inFlight) return;
  sender.inFlight = true;
  try {
    while (sender.pending) {
      const next = sender.pending;
      sender.pending = null;
      try {
        const response = await api.fetchApi(LIVE_TRACKS_ROUTE, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: next,
        });
        if (!response.ok) console.warn(`MotionStream: live tracks rejected (${response.status})`);
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
  for (const [nodeId, promptId] of liveStreams) {
    if (!feeds(editorNode, nodeId)) continue;
    const body = `{"prompt_id":${JSON.stringify(promptId)},"node_id":${JSON.stringify(nodeId)},"tracks":${tracksJson}}`;
    void send(nodeId, body);
  }
}

function endAll() {
  liveStreams.clear();
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
      if (nodeId !== null && isStreamingNode(nodeId)) liveStreams.set(nodeId, currentPromptId);
    });
    for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(type, endAll);
    }
    api.addEventListener("motionstream.frames", (event) => {
      const { node, prompt_id: promptId, done } = event.detail ?? {};
      if (node === undefined || node === null) return;
      if (done) liveStreams.delete(String(node));
      else liveStreams.set(String(node), promptId ?? currentPromptId);
    });
  },
});
