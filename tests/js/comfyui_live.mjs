// Live drags in the real ComfyUI front end: headless chromium loads the embedded demo workflow from a
// running ComfyUI, streams it (until Stop, paced to playback, or a set number of frames), makes region
// drags with the mouse on the track editor over the demo's orange sprite while it streams, then presses
// the preview's Stop. Everything the page saw goes to one JSON file:
//   frames     every motionstream.frames message (chunk_index, tracks_version, edit_to_frames_ms, the
//              base64 JPEG frames unless --no-frames, `at`: ms since the prompt was queued)
//   statuses   every motionstream.status message; runEnds: execution_success / _error / _interrupted
//   liveTracks every POST /motionstream/live_tracks (HTTP status, body size, tracks and region handles)
//   drags      each drag (from, to, when; endFrame: the stream frame its last keyframe is timed at, as a
//              live drag keeps the pointer's pacing from the frames received when it began)
//   latencies  the player's samples
//   player     the preview player at the end (state, frameCount, skippedFrames); pageErrors, warnings
//
//   node tests/js/comfyui_live.mjs http://127.0.0.1:8188 out.json [--seconds 25] [--drags 1]
//        [--stop-after-chunk K] [--after-drag-frames N] [--first-drag-chunk 4] [--drag-every 4]
//        [--frames N] [--no-frames] [--screenshots DIR]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WORKFLOW = path.join(REPO_ROOT, "example_workflows", "motionstream_anywhere_embedded_demo.json");
// The demo's orange sprite (normalised image coordinates) and where the drags take it, back and forth.
const SPRITE_AT = [0.47, 0.4];
const DRAG_TO = [0.75, 0.22];
const DRAG_STEPS = 6;
const DRAG_STEP_MS = 40; // a quarter of a second of dragging (more on a busy machine): as much video
const ENDED = ["done", "stopped", "cancelled", "failed"];

const { values: options, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: "string", default: "25" }, // of streaming, from the first frames, before Stop
    "stop-after-chunk": { type: "string" }, // or Stop as soon as this chunk's frames arrive,
    "after-drag-frames": { type: "string", default: "0" }, // and this many frames past the last drag's end
    frames: { type: "string" }, // a set length instead of until Stop
    drags: { type: "string", default: "1" },
    "first-drag-chunk": { type: "string", default: "4" },
    "drag-every": { type: "string", default: "4" }, // seconds between drags
    "no-frames": { type: "boolean", default: false },
    screenshots: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM_PATH || "/usr/bin/chromium" },
  },
});
const [serverUrl, outPath] = positionals;
if (!serverUrl || !outPath) {
  console.error("usage: node comfyui_live.mjs SERVER_URL OUT.json [options]");
  process.exit(2);
}
const streamSeconds = Number(options.seconds);
const stopAfterChunk = options["stop-after-chunk"] === undefined ? Infinity : Number(options["stop-after-chunk"]);
const afterDragFrames = Number(options["after-drag-frames"]);
const dragCount = Number(options.drags);
const dragEvery = Number(options["drag-every"]) * 1000;
if (options.screenshots) mkdirSync(options.screenshots, { recursive: true });

const record = { serverUrl, options, frames: [], statuses: [], runEnds: [], liveTracks: [], drags: [],
  latencies: [], player: null, pageErrors: [], warnings: [] };
let began = Date.now();
const now = () => Date.now() - began;

async function until(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function onMessage(payload) {
  if (typeof payload !== "string") return; // binary previews
  const { type, data = {} } = JSON.parse(payload);
  if (type === "motionstream.frames") {
    const { chunk_index, tracks_version = 0, edit_to_frames_ms = null, done, fps, frames = [] } = data;
    record.frames.push({ at: now(), chunk_index, tracks_version, edit_to_frames_ms, done, fps,
      count: frames.length, ...(options["no-frames"] ? {} : { frames }) });
  } else if (type === "motionstream.status") {
    record.statuses.push({ at: now(), state: data.state, frames: data.frames ?? null, file: data.file ?? null });
  } else if (["execution_success", "execution_error", "execution_interrupted"].includes(type)) {
    record.runEnds.push({ at: now(), type, data });
  }
}

function onLiveTracks(request, status, reply) {
  const body = request.postData() ?? "";
  const document = JSON.parse(body).tracks ?? {};
  const regions = document.regions ?? [];
  record.liveTracks.push({
    at: now(), status, reply, bytes: body.length, tracks: document.tracks?.length ?? 0,
    regions: regions.length, regionKinds: regions.map((region) => region.kind),
    regionKeyframes: regions.reduce((sum, region) => sum + region.keyframes.length, 0),
    regionBytes: JSON.stringify(regions).length,
  });
}

const framesReceived = () => record.frames.reduce((sum, message) => sum + message.count, 0);

async function screenshot(page, name) {
  if (options.screenshots) await page.screenshot({ path: path.join(options.screenshots, `${name}.png`) });
}

// The player's state; its latencies keep the last few, so they are merged by edit version as they come.
async function pollPlayer(page) {
  const player = await page.evaluate(() => {
    const node = app.graph.nodes.find((n) => n.type === "MotionStreamStreamingSampler");
    const p = node.motionstreamPlayer;
    return { state: p.state, frameCount: p.frameCount, playhead: p.playhead, skippedFrames: p.skippedFrames,
      latencies: p.latencies.map((sample) => ({ ...sample })) };
  });
  for (const sample of player.latencies) {
    if (!record.latencies.some((known) => known.version === sample.version)) record.latencies.push(sample);
  }
  record.player = { state: player.state, frameCount: player.frameCount, playhead: player.playhead,
    skippedFrames: player.skippedFrames };
}

// Waits `ms`, reading the player meanwhile (it keeps only its last few latency samples).
async function watch(page, ms) {
  const end = Date.now() + ms;
  do {
    await pollPlayer(page);
    await page.waitForTimeout(Math.max(0, Math.min(250, end - Date.now())));
  } while (Date.now() < end);
}

async function openWorkflow(page) {
  await page.goto(serverUrl);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 120000 });
  await page.waitForTimeout(1500);
  await page.keyboard.press("Escape"); // any welcome dialog
  const workflow = JSON.parse(readFileSync(WORKFLOW, "utf8"));
  await page.evaluate(async ({ workflow, frames }) => {
    await app.loadGraphData(workflow);
    const sampler = app.graph.nodes.find((n) => n.type === "MotionStreamStreamingSampler");
    const set = (name, value) => (sampler.widgets.find((w) => w.name === name).value = value);
    set("until_stopped", frames === undefined);
    set("pace_to_playback", true);
    if (frames !== undefined) set("num_frames", Number(frames));
    sampler.motionstreamPlayer.stopButton.dataset.testid = "motionstream-stop";
    const editor = app.graph.nodes.find((n) => n.type === "MotionStreamTrackEditor");
    // Editor and preview side by side on screen, at scale 1.
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [-editor.pos[0] + 80, -editor.pos[1] + 80]; // clear of the side bar
    app.canvas.setDirty(true, true);
  }, { workflow, frames: options.frames });
  await page.waitForTimeout(1000);
}

// One region drag with the mouse, paced like a hand: grab `from`, let go at `to` (normalised).
async function drag(page, canvas, from, to) {
  const box = await canvas.boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  const entry = { from, to, at: now(), chunksReceived: record.frames.length, framesReceived: framesReceived() };
  await page.mouse.move(...at(from));
  await page.mouse.down();
  for (let step = 1; step <= DRAG_STEPS; step += 1) {
    const f = step / DRAG_STEPS;
    await page.mouse.move(...at([from[0] + f * (to[0] - from[0]), from[1] + f * (to[1] - from[1])]));
    await page.waitForTimeout(DRAG_STEP_MS);
    if (step === DRAG_STEPS / 2 && record.drags.length === 0) await screenshot(page, "editor_mid_drag");
  }
  await page.mouse.up();
  entry.releasedAt = now();
  const fps = record.frames.at(-1)?.fps ?? 16;
  entry.endFrame = Math.ceil(entry.framesReceived + ((entry.releasedAt - entry.at) / 1000) * fps);
  record.drags.push(entry);
}

async function main() {
  const browser = await chromium.launch({ executablePath: options.chromium, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    page.on("pageerror", (error) => record.pageErrors.push(error.message));
    page.on("console", (message) => {
      if (["error", "warning"].includes(message.type()) && /MotionStream/i.test(message.text())) {
        record.warnings.push(message.text().slice(0, 500));
      }
    });
    page.on("websocket", (ws) => ws.on("framereceived", ({ payload }) => onMessage(payload)));
    page.on("requestfinished", async (request) => {
      if (!request.url().includes("/motionstream/live_tracks")) return;
      const response = await request.response();
      onLiveTracks(request, response?.status() ?? null, await response?.json().catch(() => null));
    });
    page.on("requestfailed", (request) => {
      if (!request.url().includes("/motionstream/live_tracks")) return;
      onLiveTracks(request, null, request.failure()?.errorText);
    });

    await openWorkflow(page);
    began = Date.now();
    const canvas = page.locator(".ms-track-editor canvas").first();
    await page.locator(".ms-track-editor").first().getByRole("button", { name: "Region", exact: true }).click();
    await page.evaluate(() => app.queuePrompt(0));
    const firstDragChunk = Number(options["first-drag-chunk"]);
    await until(() => record.frames.some((f) => f.chunk_index >= firstDragChunk) || record.runEnds.length,
      300000, `frames message ${firstDragChunk}`);
    const firstFramesAt = record.frames[0]?.at ?? now();
    const settled = () => framesReceived() >= (record.drags.at(-1)?.endFrame ?? 0) + afterDragFrames;
    const timeToStop = (marginMs = 0) => options.frames === undefined && (
      now() - firstFramesAt >= streamSeconds * 1000 - marginMs
      || (record.frames.at(-1)?.chunk_index >= stopAfterChunk && settled()));
    for (let index = 0; index < dragCount && !record.runEnds.length; index += 1) {
      if (index > 0) await watch(page, dragEvery);
      if (index > 0 && timeToStop(2000)) break; // the first drag is always made
      const [from, to] = index % 2 === 0 ? [SPRITE_AT, DRAG_TO] : [DRAG_TO, SPRITE_AT];
      await drag(page, canvas, from, to);
      if (index === 0) {
        await watch(page, 1500);
        await screenshot(page, "preview_mid_stream");
      }
    }

    if (options.frames === undefined) {
      while (!timeToStop() && !record.runEnds.length) await watch(page, 250);
      if (!record.runEnds.length) {
        record.stopPressedAt = now();
        await page.locator('[data-testid="motionstream-stop"]').click();
      }
    }
    await until(() => record.statuses.some((s) => ENDED.includes(s.state)), 120000, "the stream's last status");
    await until(() => record.runEnds.length > 0, 120000, "the end of the run");
    await watch(page, 1000); // the player shows the last chunks
    await screenshot(page, "stopped");
  } catch (error) {
    record.error = String(error?.stack ?? error);
  } finally {
    await browser.close();
    writeFileSync(outPath, JSON.stringify(record));
  }
  if (record.error) {
    console.error(record.error);
    process.exit(1);
  }
}

await main();
