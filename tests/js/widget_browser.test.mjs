// Browser tests of the track editor: Playwright drives the system chromium against a static server
// on 127.0.0.1. Run through tests/js/run_browser_test.sh (installs what is missing) or
// `node --test tests/js/widget_browser.test.mjs` once playwright-core and chromium are there.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const MIME_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
};

// Stand-ins for ComfyUI's /scripts/app.js and /scripts/api.js, enough to run the extensions, and a fake node.
const STUB_MODULES = {
  "/scripts/app.js": `
    export const app = {
      extensions: [],
      registerExtension(extension) { this.extensions.push(extension); },
      graph: {
        nodes: [],
        links: new Map(),
        getNodeById(id) { return this.nodes.find((node) => String(node.id) === String(id)) ?? null; },
      },
    };`,
  "/scripts/api.js": `
    class FakeApi extends EventTarget {
      requests = [];
      apiURL(route) { return route; }
      async fetchApi(route, options = {}) {
        const body = typeof options.body === "string" ? options.body : null;
        this.requests.push({ route, method: options.method, body });
        const answer = route === "/upload/image" ? { name: "background.svg", subfolder: "", type: "input" } : {};
        return new Response(JSON.stringify(answer), { status: 200, headers: { "Content-Type": "application/json" } });
      }
    }
    export const api = new FakeApi();`,
  "/scripts/fake_node.js": `
    // Just enough of a LiteGraph node: widgets, inputs and addDOMWidget (into the element #hostId).
    export class FakeNode {
      constructor(id, hostId = "node") {
        Object.assign(this, { id, hostId, size: [300, 200], properties: {}, inputs: [] });
        this.widgets = [{ name: "tracks_json", type: "text", value: "" }];
      }
      addDOMWidget(name, type, element, options) {
        document.getElementById(this.hostId).append(element);
        const widget = { name, type, element, options };
        this.widgets.push(widget);
        return widget;
      }
      setSize(size) {
        this.size = size;
      }
    }
    // A node class as ComfyUI registers it: every extension's beforeRegisterNodeDef has seen it.
    export async function registeredNodeType(app, name) {
      const NodeType = class extends FakeNode {};
      for (const extension of app.extensions) await extension.beforeRegisterNodeDef?.(NodeType, { name });
      return NodeType;
    }`,
};

const VIEW_IMAGE =
  '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="360"><rect width="640" height="360" fill="#357"/></svg>';

function startServer() {
  const server = createServer(async (request, response) => {
    const route = decodeURIComponent(new URL(request.url, "http://localhost").pathname);
    if (STUB_MODULES[route]) {
      response.writeHead(200, { "Content-Type": MIME_TYPES[".js"] });
      return response.end(STUB_MODULES[route]);
    }
    if (route === "/view") {
      // Stands in for an uploaded image: 640 x 360.
      response.writeHead(200, { "Content-Type": "image/svg+xml" });
      return response.end(VIEW_IMAGE);
    }
    // ComfyUI serves the pack's js/ folder under /extensions/<pack>/.
    const relative = route.startsWith("/extensions/motionstream/")
      ? path.join("js", route.slice("/extensions/motionstream/".length))
      : route.slice(1);
    const file = path.resolve(REPO_ROOT, relative);
    if (!file.startsWith(REPO_ROOT + path.sep)) {
      response.writeHead(403);
      return response.end();
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { "Content-Type": MIME_TYPES[path.extname(file)] ?? "application/octet-stream" });
      response.end(body);
    } catch {
      response.writeHead(404);
      response.end("not found");
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function loadPlaywright() {
  try {
    return await import("playwright-core");
  } catch (error) {
    throw new Error(`playwright-core is not installed; run tests/js/run_browser_test.sh (${error.message})`);
  }
}

let server;
let context;
let profileDir;
let baseUrl;

before(async () => {
  const { chromium } = await loadPlaywright();
  server = await startServer();
  baseUrl = `http://127.0.0.1:${server.address().port}`;
  profileDir = await mkdtemp(path.join(tmpdir(), "motionstream-chromium-"));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 900, height: 800 },
  });
});

after(async () => {
  await context?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
});

async function openHarness() {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  await page.goto(`${baseUrl}/tests/js/harness.html`);
  await page.waitForFunction(() => window.__ready === true);
  return { page, errors };
}

// Drag between two points given in normalised frame coordinates of `canvas`.
async function drag(page, canvas, from, to, { shift = false } = {}) {
  const box = await canvas.boundingBox();
  const at = (point) => [box.x + point[0] * box.width, box.y + point[1] * box.height];
  if (shift) await page.keyboard.down("Shift");
  await page.mouse.move(...at(from));
  await page.mouse.down();
  if (to) await page.mouse.move(...at(to), { steps: 12 });
  await page.mouse.up();
  if (shift) await page.keyboard.up("Shift");
}

function assertNear(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} is not within ${tolerance} of ${expected}`);
}

describe("track editor canvas (harness page)", () => {
  test("a pointer drag becomes one track from the drag start to the drag end", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    await drag(page, canvas, [0.2, 0.3], [0.7, 0.6]);

    const document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.format, "motionstream-tracks");
    assert.equal(document.width, 832);
    assert.equal(document.height, 480);
    assert.equal(document.tracks.length, 1);
    const [track] = document.tracks;
    assert.equal(track.static, false);
    assert.ok(track.keyframes.length >= 2);
    const first = track.keyframes[0];
    const last = track.keyframes[track.keyframes.length - 1];
    // Within two CSS pixels of a canvas that is several hundred pixels wide.
    assertNear(first.x, 0.2, 0.01, "start x");
    assertNear(first.y, 0.3, 0.01, "start y");
    assertNear(last.x, 0.7, 0.01, "end x");
    assertNear(last.y, 0.6, 0.01, "end y");
    assert.equal(first.t, 0);
    assert.equal(last.t, document.duration);
    assert.deepEqual(await page.evaluate(() => window.__changes.length), 1);
    assert.match(await page.locator(".ms-status").textContent(), /track #0/);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("shift-click adds an anchor, dragging it in Move mode moves it, Delete and Ctrl+Z/Ctrl+Shift+Z work", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    await drag(page, canvas, [0.8, 0.2], null, { shift: true });
    let document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 1);
    assert.equal(document.tracks[0].static, true);
    assertNear(document.tracks[0].keyframes[0].x, 0.8, 0.01, "anchor x");

    await page.getByRole("button", { name: "Move" }).click();
    await drag(page, canvas, [0.8, 0.2], [0.5, 0.5]);
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 1, "in Move mode dragging a point moves it instead of drawing");
    assertNear(document.tracks[0].keyframes[0].x, 0.5, 0.01, "moved anchor x");
    assertNear(document.tracks[0].keyframes[0].y, 0.5, 0.01, "moved anchor y");
    assert.match(await page.locator(".ms-status").textContent(), /anchor #0 {2}x 0\.5\d{3} {2}y 0\.5\d{3}/);

    await page.keyboard.press("Delete");
    assert.equal(JSON.parse(await page.evaluate(() => window.__editor.exportJson())).tracks.length, 0);
    await page.keyboard.press("Control+z");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 1);
    assertNear(document.tracks[0].keyframes[0].x, 0.5, 0.01, "restored anchor x");
    await page.keyboard.press("Control+z");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assertNear(document.tracks[0].keyframes[0].x, 0.8, 0.01, "a whole move is one undo step");
    await page.keyboard.press("Control+Shift+z");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assertNear(document.tracks[0].keyframes[0].x, 0.5, 0.01, "redo");
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("the Clear and Undo buttons, the timing inputs and invalid imports", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    await drag(page, canvas, [0.1, 0.1], [0.4, 0.2]);
    const lengthInput = page.getByTitle("length of the selected track (s)");
    await lengthInput.fill("2");
    await lengthInput.press("Enter");
    await lengthInput.blur();
    let document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks[0].keyframes.at(-1).t, 2);

    await page.getByRole("button", { name: "Clear" }).click();
    assert.equal(JSON.parse(await page.evaluate(() => window.__editor.exportJson())).tracks.length, 0);
    await page.getByRole("button", { name: "Undo" }).click();
    assert.equal(JSON.parse(await page.evaluate(() => window.__editor.exportJson())).tracks.length, 1);

    const message = await page.evaluate(() => {
      try {
        window.__editor.importJson('{"format":"motionstream-tracks","version":3}');
        return null;
      } catch (error) {
        return error.message;
      }
    });
    assert.match(message, /unsupported widget JSON version 3/);
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 1);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("Draw mode draws across an existing track; the mode buttons show which mode is on", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    const active = () => page.locator(".ms-track-editor button.ms-active").allTextContents();
    assert.deepEqual(await active(), ["Draw"]);
    await drag(page, canvas, [0.2, 0.5], [0.8, 0.5]);
    // Starts on the first track's line and crosses it: a second track, no modifier needed.
    await drag(page, canvas, [0.5, 0.5], [0.5, 0.9]);
    let document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 2);
    assertNear(document.tracks[1].keyframes[0].x, 0.5, 0.01, "second track start x");
    assertNear(document.tracks[1].keyframes.at(-1).y, 0.9, 0.01, "second track end y");
    // A click on a track in Draw mode selects it.
    await drag(page, canvas, [0.3, 0.5], null);
    assert.match(await page.locator(".ms-status").textContent(), /track #0/);
    await page.getByRole("button", { name: "Move" }).click();
    assert.deepEqual(await active(), ["Move"]);
    await drag(page, canvas, [0.35, 0.5], [0.35, 0.4]);
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.tracks.length, 2, "Move mode moves, it does not draw");
    assert.ok(document.tracks[0].keyframes.some((keyframe) => Math.abs(keyframe.y - 0.4) < 0.01), "moved to y 0.4");
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("Region mode: a visible radius, drags become region handles, shift-click pins a region", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    await page.getByRole("button", { name: "Region" }).click();
    const box = await canvas.boundingBox();
    // The radius circle follows the pointer: a blue tint inside it, none outside.
    const pixel = (x, y) =>
      page.evaluate(
        ([px, py]) => Array.from(document.querySelector(".ms-track-editor canvas").getContext("2d").getImageData(px, py, 1, 1).data),
        [Math.round(x), Math.round(y)],
      );
    const size = await page.evaluate(() => {
      const element = document.querySelector(".ms-track-editor canvas");
      return { width: element.width, height: element.height };
    });
    const radiusPx = 0.15 * Math.min(size.width, size.height);
    const centre = [size.width / 2, size.height / 2];
    const before = await pixel(centre[0], centre[1] - radiusPx / 2);
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.waitForFunction(() => new Promise((resolve) => requestAnimationFrame(() => resolve(true))));
    const inside = await pixel(centre[0], centre[1] - radiusPx / 2);
    const outside = await pixel(centre[0], centre[1] - radiusPx * 1.3);
    assert.ok(inside[2] - inside[0] > 15, `blue inside the radius: ${inside} (was ${before})`);
    assert.ok(Math.abs(outside[2] - outside[0]) < 4, `no tint outside: ${outside}`);

    await drag(page, canvas, [0.5, 0.5], [0.7, 0.4]);
    await drag(page, canvas, [0.2, 0.8], null, { shift: true });
    let document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.version, 2);
    assert.deepEqual(document.tracks, []);
    assert.deepEqual(document.regions.map((region) => [region.kind, region.radius]), [["path", 0.15], ["anchor", 0.15]]);
    const [handle, anchor] = document.regions;
    assertNear(handle.keyframes[0].x, 0.5, 0.01, "grab x");
    assertNear(handle.keyframes.at(-1).x, 0.7, 0.01, "drop x");
    assert.equal(handle.keyframes.at(-1).t, document.duration);
    assertNear(anchor.keyframes[0].y, 0.8, 0.01, "anchor y");
    assert.match(await page.locator(".ms-status").textContent(), /region anchor #1 {2}r 0\.150/);

    // The radius field and the [ ] keys resize the selected region (one undo step for the keys).
    await page.keyboard.press("]");
    await page.keyboard.press("]");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.regions[1].radius, 0.1984);
    await page.keyboard.press("Control+z");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.regions[1].radius, 0.15);
    const radiusInput = page.getByTitle(/radius of region drags/);
    await radiusInput.fill("0.3");
    await radiusInput.press("Enter");
    document = JSON.parse(await page.evaluate(() => window.__editor.exportJson()));
    assert.equal(document.regions[1].radius, 0.3);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("Ctrl+Z and Ctrl+Shift+Z in the editor reach neither ComfyUI's graph undo nor its keybindings", async () => {
    const { page, errors } = await openHarness();
    // Stand-ins for ComfyUI: the change tracker's window capture listener (it skips text fields,
    // reading document.activeElement) and the keybinding service's window listener.
    await page.evaluate(() => {
      window.__host = { undo: 0, keybindings: 0 };
      window.addEventListener(
        "keydown",
        (event) => {
          const focused = document.activeElement;
          const textField = focused?.tagName === "INPUT" || focused?.tagName === "TEXTAREA" || focused?.isContentEditable;
          if (!textField && (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") window.__host.undo += 1;
        },
        true,
      );
      const modifiers = ["Control", "Shift", "Alt", "Meta"];
      window.addEventListener("keydown", (event) => (window.__host.keybindings += modifiers.includes(event.key) ? 0 : 1));
    });
    const canvas = page.locator(".ms-track-editor canvas");
    await drag(page, canvas, [0.2, 0.3], [0.6, 0.3]);
    await drag(page, canvas, [0.2, 0.6], [0.6, 0.6]);
    for (const key of ["Control+z", "Control+z", "Control+Shift+z", "Delete", "Escape", "v", " "]) await page.keyboard.press(key);
    const tracks = JSON.parse(await page.evaluate(() => window.__editor.exportJson())).tracks;
    assert.equal(tracks.length, 1, "two undos and one redo: one track");
    assert.deepEqual(await page.evaluate(() => window.__host), { undo: 0, keybindings: 0 });
    assert.ok(await page.evaluate(() => document.activeElement === window.__editor.keySink), "the editor keeps the focus");
    // The Undo button leaves the focus in the editor too.
    await page.getByRole("button", { name: "Undo" }).click();
    await page.keyboard.press("Control+z");
    assert.deepEqual(await page.evaluate(() => window.__host), { undo: 0, keybindings: 0 });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("with the queue running on every change, the graph undo still does not take the editor's Ctrl+Z", async () => {
    const { page, errors } = await openHarness();
    // ComfyUI's change tracker in that mode: it does not skip text fields, and reads the key a frame later.
    await page.evaluate(() => {
      window.__host = { undo: 0 };
      window.addEventListener(
        "keydown",
        (event) => requestAnimationFrame(() => {
          if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") window.__host.undo += 1;
        }),
        true,
      );
    });
    const canvas = page.locator(".ms-track-editor canvas");
    await drag(page, canvas, [0.2, 0.3], [0.6, 0.3]);
    await drag(page, canvas, [0.2, 0.6], [0.6, 0.6]);
    for (const key of ["Control+z", "Control+Shift+z", "Control+z"]) await page.keyboard.press(key);
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    const tracks = JSON.parse(await page.evaluate(() => window.__editor.exportJson())).tracks;
    assert.equal(tracks.length, 1, "undo, redo, undo: one track");
    assert.deepEqual(await page.evaluate(() => window.__host), { undo: 0 });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("Play animates the tracks and the region grid over the clip", async () => {
    const { page, errors } = await openHarness();
    const canvas = page.locator(".ms-track-editor canvas");
    await page.evaluate(() => window.__editor.state.setClip({ duration: 1 }));
    await drag(page, canvas, [0.2, 0.3], [0.6, 0.3]);
    await page.getByRole("button", { name: "Region" }).click();
    await drag(page, canvas, [0.5, 0.6], [0.7, 0.6]);
    const frame = () => page.evaluate(() => document.querySelector(".ms-track-editor canvas").toDataURL());
    const still = await frame();
    await page.getByRole("button", { name: "Play" }).click();
    assert.equal(await page.evaluate(() => window.__editor.playing), true);
    assert.equal(await page.locator(".ms-track-editor button.ms-active", { hasText: "Pause" }).count(), 1);
    await page.waitForFunction(() => window.__editor.previewTime > 0.2);
    const playing = await frame();
    assert.notEqual(playing, still, "the canvas changes while playing");
    const label = await page.locator(".ms-track-editor .ms-row span").last().textContent();
    assert.match(label, /^t 0\.\d\d s$/);
    await page.waitForFunction(() => !window.__editor.playing, null, { timeout: 5000 });
    assert.equal(await page.evaluate(() => window.__editor.previewTime), 1, "stops at the end of the clip");
    assert.equal(await page.getByRole("button", { name: "Play" }).count(), 1);
    // Space plays again from the start; clicking Pause stops it.
    await page.keyboard.press(" ");
    assert.ok((await page.evaluate(() => window.__editor.previewTime)) < 0.5);
    await page.getByRole("button", { name: "Pause" }).click();
    assert.equal(await page.evaluate(() => window.__editor.playing), false);
    assert.deepEqual(errors, []);
    await page.close();
  });
});

describe("live region drags through the editor node (stub app/api modules)", () => {
  test("a region drag while a stream runs is a green live handle timed by the stream's frames", async () => {
    const { page, errors } = await openHarness();
    await page.evaluate(async () => {
      document.body.innerHTML = '<div id="node" style="width:600px;height:500px"></div>';
      const { app } = await import("/scripts/app.js");
      await import("/extensions/motionstream/track_editor_widget.js");
      for (const extension of app.extensions) await extension.setup?.();
      const { registeredNodeType } = await import("/scripts/fake_node.js");
      const EditorNode = await registeredNodeType(app, "MotionStreamTrackEditor");
      const editorNode = new EditorNode(5);
      editorNode.onNodeCreated();
      const streamingNode = { id: 9, type: "MotionStreamSampler", comfyClass: "MotionStreamStreamingSampler", inputs: [{ name: "tracks", link: 1 }] };
      app.graph.nodes.push(editorNode, streamingNode);
      app.graph.links.set(1, { id: 1, origin_id: 5, target_id: 9 });
      window.__editorNode = editorNode;
    });
    const canvas = page.locator("#node .ms-track-editor canvas");
    await page.getByRole("button", { name: "Region" }).click();
    await drag(page, canvas, [0.3, 0.3], [0.4, 0.3]); // before any stream: a drawn path
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      api.clientId = "client-a";
      api.dispatchEvent(new CustomEvent("execution_start", { detail: { prompt_id: "prompt-1" } }));
      api.dispatchEvent(new CustomEvent("executing", { detail: "9" }));
      const frames = (count) => Array.from({ length: count }, () => "");
      const message = (chunk, count) => ({ node: "9", prompt_id: "prompt-1", fps: 16, chunk_index: chunk, done: false, frames: frames(count), live_token: "token-1" });
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail: message(0, 1) }));
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail: message(1, 3) }));
      api.requests.length = 0;
    });
    await drag(page, canvas, [0.6, 0.6], [0.8, 0.5]);
    await page.waitForFunction(async () =>
      (await import("/scripts/api.js")).api.requests.some((request) => request.route === "/motionstream/live_tracks"),
    );
    const requests = await page.evaluate(async () => (await import("/scripts/api.js")).api.requests);
    const last = JSON.parse(requests.filter((request) => request.route === "/motionstream/live_tracks").at(-1).body);
    const regions = last.tracks.regions;
    assert.deepEqual(regions.map((region) => region.kind), ["path", "live"]);
    assert.equal(regions[1].keyframes[0].t, 0.25, "4 frames at 16 fps: the drag starts at 0.25 s of the stream");
    assert.ok(regions[1].keyframes.at(-1).t < 2, "at the pointer's own pace, not stretched over the clip");
    assert.ok(requests.every((request) => request.body === null || request.body.length < 2000), "edits stay small");
    const stored = JSON.parse(await page.evaluate(() => window.__editorNode.widgets[0].value));
    assert.deepEqual(stored.regions.map((region) => region.kind), ["path", "live"]);
    assert.deepEqual(errors, []);
    await page.close();
  });
});

describe("ComfyUI extensions against stub app/api modules", () => {
  test("editor node, live control and live preview", async () => {
    const { page, errors } = await openHarness();
    await page.evaluate(async () => {
      document.body.innerHTML = '<div id="node" style="width:600px;height:500px"></div><div id="preview" style="width:300px;height:220px"></div>';
      const { app } = await import("/scripts/app.js");
      await import("/extensions/motionstream/track_editor_widget.js");
      await import("/extensions/motionstream/live_preview.js");
      for (const extension of app.extensions) await extension.setup?.();

      const { registeredNodeType } = await import("/scripts/fake_node.js");
      const EditorNode = await registeredNodeType(app, "MotionStreamTrackEditor");
      const StreamingNode = await registeredNodeType(app, "MotionStreamStreamingSampler");
      const editorNode = new EditorNode(5, "node");
      editorNode.onNodeCreated();
      const streamingNode = new StreamingNode(9, "preview");
      streamingNode.type = "MotionStreamStreamingSampler";
      streamingNode.inputs = [{ name: "tracks", link: 1 }];
      streamingNode.onNodeCreated();
      app.graph.nodes.push(editorNode, streamingNode);
      app.graph.links.set(1, { id: 1, origin_id: 5, target_id: 9 });
      window.__nodes = { editorNode, streamingNode };
    });

    const valueWidget = () => page.evaluate(() => window.__nodes.editorNode.widgets[0]);
    assert.equal((await valueWidget()).hidden, true, "tracks_json is hidden");

    // A drag in the node's editor lands in the tracks_json widget.
    const canvas = page.locator("#node .ms-track-editor canvas");
    await drag(page, canvas, [0.25, 0.5], [0.75, 0.5]);
    const stored = JSON.parse((await valueWidget()).value);
    assert.equal(stored.tracks.length, 1);
    assertNear(stored.tracks[0].keyframes[0].x, 0.25, 0.01, "stored start x");

    // An uploaded background image is shown and sets the frame size.
    await page.locator('#node input[type=file][accept="image/*"]').setInputFiles({
      name: "photo.png",
      mimeType: "image/png",
      buffer: Buffer.from("not really a png"),
    });
    await page.waitForFunction(() => JSON.parse(window.__nodes.editorNode.widgets[0].value).width === 640);
    const upload = await page.evaluate(async () => ({
      routes: (await import("/scripts/api.js")).api.requests.map((request) => request.route),
      stored: window.__nodes.editorNode.properties.motionstream_background,
      height: JSON.parse(window.__nodes.editorNode.widgets[0].value).height,
    }));
    assert.deepEqual(upload.routes, ["/upload/image"]);
    assert.deepEqual(upload.stored, { filename: "background.svg", subfolder: "", type: "input" });
    assert.equal(upload.height, 360);
    await page.evaluate(async () => ((await import("/scripts/api.js")).api.requests.length = 0));

    // Reloading a workflow: configure sets the widget value, the editor follows.
    await page.evaluate(() => {
      const { editorNode } = window.__nodes;
      editorNode.widgets[0].value = JSON.stringify({
        format: "motionstream-tracks",
        version: 1,
        width: 640,
        height: 480,
        fps: 16,
        duration: 3,
        tracks: [
          { id: 4, static: true, keyframes: [{ t: 0, x: 0.1, y: 0.1 }] },
          { id: 6, static: false, keyframes: [{ t: 0, x: 0.2, y: 0.2 }, { t: 3, x: 0.3, y: 0.3 }] },
        ],
      });
      editorNode.onConfigure({});
    });
    await page.waitForFunction(() => window.__nodes.editorNode.motionstreamEditor.state.tracks.length === 2);
    assert.equal(await page.evaluate(() => window.__nodes.editorNode.motionstreamEditor.state.canUndo), false);

    // While the streaming node runs, edits are POSTed for it, with the token its frames bring.
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      api.clientId = "client-a";
      api.dispatchEvent(new CustomEvent("execution_start", { detail: { prompt_id: "prompt-1" } }));
      api.dispatchEvent(new CustomEvent("executing", { detail: "9" }));
    });
    await drag(page, canvas, [0.5, 0.2], [0.6, 0.8]);
    const liveRequests = async () =>
      (await page.evaluate(async () => (await import("/scripts/api.js")).api.requests)).filter(
        (request) => request.route === "/motionstream/live_tracks",
      );
    assert.equal((await liveRequests()).length, 0, "edits wait for the stream's token");
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      const detail = { node: "9", prompt_id: "prompt-1", fps: 16, chunk_index: 0, done: false, frames: [], live_token: "token-1" };
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail }));
    });
    await page.waitForFunction(async () =>
      (await import("/scripts/api.js")).api.requests.some((request) => request.route === "/motionstream/live_tracks"),
    );
    const live = await liveRequests();
    assert.equal(live.length, 1, "the waiting edit is sent once the token is there");
    const body = JSON.parse(live.at(-1).body);
    assert.equal(body.prompt_id, "prompt-1");
    assert.equal(body.node_id, "9");
    assert.equal(body.token, "token-1");
    assert.equal(body.client_id, "client-a");
    assert.equal(body.tracks.tracks.length, 3);
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      api.dispatchEvent(new CustomEvent("execution_success", { detail: { prompt_id: "prompt-1" } }));
      api.requests.length = 0;
    });
    await drag(page, canvas, [0.1, 0.9], [0.3, 0.9]);
    assert.equal((await page.evaluate(async () => (await import("/scripts/api.js")).api.requests)).length, 0);

    // Streamed frames play in the sampler's preview.
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      const frame = (color) => {
        const canvas = Object.assign(document.createElement("canvas"), { width: 32, height: 16 });
        const context = canvas.getContext("2d");
        context.fillStyle = color;
        context.fillRect(0, 0, 32, 16);
        return canvas.toDataURL("image/jpeg").split(",")[1];
      };
      const detail = { node: "9", prompt_id: "prompt-2", fps: 30, chunk_index: 0, done: false, frames: [frame("red"), frame("blue")] };
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail }));
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail: { ...detail, chunk_index: 1, done: true, frames: [frame("green")] } }));
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail: { ...detail, node: "77" } }));
    });
    await page.waitForFunction(() => window.__nodes.streamingNode.motionstreamPlayer.canvas.width === 32);
    const player = await page.evaluate(() => {
      const { motionstreamPlayer } = window.__nodes.streamingNode;
      return { frames: motionstreamPlayer.frameCount, status: motionstreamPlayer.status.textContent };
    });
    assert.equal(player.frames, 3);
    assert.equal(player.status, "chunk 1 · 3 frames · 30 fps · done");

    // The run's result is its video file, which ComfyUI previews under the node: the live canvas folds away
    // until the next stream starts.
    const canvasShown = () => page.evaluate(() => window.__nodes.streamingNode.motionstreamPlayer.canvas.style.display !== "none");
    await page.evaluate(() => window.__nodes.streamingNode.onExecuted({
      images: [{ filename: "MotionStream_00001_.mp4", subfolder: "", type: "output" }], animated: [true] }));
    assert.equal(await canvasShown(), false);
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      const detail = { node: "9", prompt_id: "prompt-3", fps: 30, chunk_index: 0, done: false, frames: [] };
      api.dispatchEvent(new CustomEvent("motionstream.frames", { detail }));
    });
    assert.equal(await canvasShown(), true);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("a graph reload that keeps the node's DOM (Vue nodes undo) shows the recreated editor and preview", async () => {
    const { page, errors } = await openHarness();
    const shown = await page.evaluate(async () => {
      document.body.innerHTML = '<div id="node" style="width:600px;height:500px"></div><div id="preview" style="width:300px;height:220px"></div>';
      const { app } = await import("/scripts/app.js");
      await import("/extensions/motionstream/track_editor_widget.js");
      await import("/extensions/motionstream/live_preview.js");
      const { registeredNodeType } = await import("/scripts/fake_node.js");
      const EditorNode = await registeredNodeType(app, "MotionStreamTrackEditor");
      const StreamingNode = await registeredNodeType(app, "MotionStreamStreamingSampler");
      const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));
      const configured = (node) => (node.onNodeCreated(), node.onConfigure({}), node);
      const oldNodes = [configured(new EditorNode(5, "node")), configured(new StreamingNode(9, "preview"))];
      await nextTask();
      for (const node of oldNodes) node.onRemoved();
      // Vue nodes mode keeps the node's DOM for the unchanged id and never mounts the new widget's element.
      for (const NodeType of [EditorNode, StreamingNode]) {
        NodeType.prototype.addDOMWidget = function (name, type, element, options) {
          const widget = { name, type, element, options };
          this.widgets.push(widget);
          return widget;
        };
      }
      const editorNode = configured(new EditorNode(5, "node"));
      const streamingNode = configured(new StreamingNode(9, "preview"));
      await nextTask();
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const editors = document.querySelectorAll("#node .ms-track-editor");
      const canvas = editorNode.motionstreamEditor.element.querySelector("canvas");
      return {
        editors: editors.length,
        newEditorShown: editors[0] === editorNode.motionstreamEditor.element,
        canvasWidth: canvas.getBoundingClientRect().width,
        previewShown: document.getElementById("preview").contains(streamingNode.motionstreamPlayer.canvas),
      };
    });
    assert.deepEqual({ ...shown, canvasWidth: shown.canvasWidth > 100 }, {
      editors: 1, newEditorShown: true, canvasWidth: true, previewShown: true });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("live preview: Stop button, final status, skipping to the newest chunk, edit latency", async () => {
    const { page, errors } = await openHarness();
    await page.evaluate(async () => {
      document.body.innerHTML = '<div id="preview" style="width:320px;height:240px"></div>';
      const { app } = await import("/scripts/app.js");
      const { api } = await import("/scripts/api.js");
      await import("/extensions/motionstream/live_preview.js");
      for (const extension of app.extensions) await extension.setup?.();
      class StreamingNode {
        constructor(id) {
          this.id = id;
          this.widgets = [];
        }
        addDOMWidget(name, type, element, options) {
          document.getElementById("preview").append(element);
          const widget = { name, type, element, options };
          this.widgets.push(widget);
          return widget;
        }
      }
      for (const extension of app.extensions) {
        await extension.beforeRegisterNodeDef?.(StreamingNode, { name: "MotionStreamStreamingSampler" });
      }
      const node = new StreamingNode(4);
      node.onNodeCreated();
      window.__node = node;
      api.clientId = "client-b";
      window.__frame = (color) => {
        const canvas = Object.assign(document.createElement("canvas"), { width: 16, height: 16 });
        const context = canvas.getContext("2d");
        context.fillStyle = color;
        context.fillRect(0, 0, 16, 16);
        return canvas.toDataURL("image/jpeg").split(",")[1];
      };
      window.__send = (type, detail) => api.dispatchEvent(new CustomEvent(type, { detail }));
    });
    const stopButton = page.locator("#preview button", { hasText: "Stop" });
    const player = () =>
      page.evaluate(() => {
        const { motionstreamPlayer } = window.__node;
        return {
          state: motionstreamPlayer.state,
          status: motionstreamPlayer.status.textContent,
          disabled: motionstreamPlayer.stopButton.disabled,
          label: motionstreamPlayer.stopButton.textContent,
          frames: motionstreamPlayer.frameCount,
          playhead: motionstreamPlayer.playhead,
          skipped: motionstreamPlayer.skippedFrames,
          latencies: motionstreamPlayer.latencies,
        };
      });
    assert.equal((await player()).disabled, true, "no stream: nothing to stop");

    // The stream's first status brings its token: Stop works before the first frames.
    await page.evaluate(() =>
      window.__send("motionstream.status", { node: "4", prompt_id: "p-1", state: "streaming", live_token: "tok-1" }),
    );
    assert.equal((await player()).disabled, false);
    await page.evaluate(() =>
      window.__send("motionstream.frames", {
        node: "4", prompt_id: "p-1", fps: 16, chunk_index: 0, done: false, frames: [window.__frame("red")],
      }),
    );
    assert.match((await player()).status, /chunk 0 · 1 frames · 16 fps · streaming/);
    await stopButton.click();
    const stopRequests = await page.evaluate(async () =>
      (await import("/scripts/api.js")).api.requests.filter((request) => request.route === "/motionstream/stop"),
    );
    assert.equal(stopRequests.length, 1);
    assert.equal(stopRequests[0].method, "POST");
    assert.deepEqual(JSON.parse(stopRequests[0].body), {
      prompt_id: "p-1", node_id: "4", token: "tok-1", client_id: "client-b",
    });
    let shown = await player();
    assert.equal(shown.state, "stopping");
    assert.equal(shown.label, "Stopping…");
    assert.equal(shown.disabled, true, "one Stop is enough");
    await page.evaluate(() =>
      window.__send("motionstream.status", {
        node: "4", prompt_id: "p-1", state: "stopped", frames: 1,
        file: { filename: "MotionStream_00001_.mp4", subfolder: "", type: "output" },
      }),
    );
    shown = await player();
    assert.equal(shown.state, "stopped");
    assert.equal(shown.status, "chunk 0 · 1 frames · 16 fps · stopped · MotionStream_00001_.mp4");
    assert.equal(shown.disabled, true);

    // Cancel: the node's final status says so, and ComfyUI's own interrupt event when it could not.
    await page.evaluate(() => {
      window.__send("motionstream.status", { node: "4", prompt_id: "p-2", state: "streaming", live_token: "tok-2" });
      window.__send("motionstream.frames", {
        node: "4", prompt_id: "p-2", fps: 16, chunk_index: 0, done: false, frames: [window.__frame("blue")],
      });
      window.__send("motionstream.status", { node: "4", prompt_id: "p-2", state: "cancelled", frames: 1 });
    });
    assert.match((await player()).status, /· cancelled$/);
    await page.evaluate(() => {
      window.__send("motionstream.frames", {
        node: "4", prompt_id: "p-3", fps: 16, chunk_index: 0, done: false, frames: [window.__frame("blue")],
      });
      window.__send("execution_interrupted", { prompt_id: "p-other" });
    });
    assert.equal((await player()).state, "streaming", "another prompt's interrupt changes nothing");
    await page.evaluate(() => window.__send("execution_interrupted", { prompt_id: "p-3" }));
    shown = await player();
    assert.equal(shown.state, "cancelled");
    assert.match(shown.status, /· cancelled$/, "the preview no longer says streaming after Cancel");

    // Behind by more than three chunks: the player skips to the newest chunk.
    await page.evaluate(() => {
      const red = window.__frame("red");
      for (let chunk = 0; chunk < 6; chunk += 1) {
        window.__send("motionstream.frames", {
          node: "4", prompt_id: "p-4", fps: 1, chunk_index: chunk, done: false, frames: [red, red, red],
        });
      }
    });
    shown = await player();
    assert.equal(shown.frames, 18);
    assert.ok(shown.skipped >= 9 && shown.frames - shown.playhead <= 9, `skipped ${shown.skipped}, playhead ${shown.playhead}`);
    assert.match(shown.status, /skipped \d+/);

    // The first chunk made with a live edit: the server's part plus the time until its first frame is drawn.
    await page.evaluate(() => {
      const green = window.__frame("green");
      window.__send("motionstream.frames", {
        node: "4", prompt_id: "p-5", fps: 30, chunk_index: 0, done: false, frames: [green, green],
      });
      window.__send("motionstream.frames", {
        node: "4", prompt_id: "p-5", fps: 30, chunk_index: 1, done: false, frames: [green, green],
        tracks_version: 1, edit_to_frames_ms: 40,
      });
    });
    await page.waitForFunction(() => window.__node.motionstreamPlayer.latencies.length === 1);
    const [latency] = (await player()).latencies;
    assert.equal(latency.version, 1);
    assert.equal(latency.serverMs, 40);
    assert.ok(latency.displayMs > 0 && latency.totalMs === latency.serverMs + latency.displayMs);
    assert.match((await player()).status, /edit → screen \d+ ms/);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("live preview: a stream with a prompt schedule offers its prompts, Switch and Enter send them", async () => {
    const { page, errors } = await openHarness();
    await page.evaluate(async () => {
      document.body.innerHTML = '<div id="preview" style="width:320px;height:260px"></div>';
      const { app } = await import("/scripts/app.js");
      const { api } = await import("/scripts/api.js");
      await import("/extensions/motionstream/live_preview.js");
      for (const extension of app.extensions) await extension.setup?.();
      const { registeredNodeType } = await import("/scripts/fake_node.js");
      const StreamingNode = await registeredNodeType(app, "MotionStreamStreamingSampler");
      window.__node = new StreamingNode(6, "preview");
      window.__node.onNodeCreated();
      api.clientId = "client-c";
      window.__send = (type, detail) => api.dispatchEvent(new CustomEvent(type, { detail }));
    });
    const row = () =>
      page.evaluate(() => {
        const { promptRow } = window.__node.motionstreamPlayer;
        const [select, , text] = promptRow.children;
        return {
          shown: promptRow.style.display !== "none",
          options: [...select.options].map((option) => option.textContent),
          textShown: text.style.display !== "none",
          note: promptRow.lastChild.textContent,
        };
      });
    const promptRequests = async () =>
      (await page.evaluate(async () => (await import("/scripts/api.js")).api.requests))
        .filter((request) => request.route === "/motionstream/live_prompt")
        .map((request) => JSON.parse(request.body));

    // A stream without a schedule: no prompt row.
    await page.evaluate(() =>
      window.__send("motionstream.status", { node: "6", prompt_id: "p-1", state: "streaming", live_token: "tok-1" }),
    );
    assert.equal((await row()).shown, false);

    // With one (no text encoder): its prompts by start time, no text field.
    await page.evaluate(() =>
      window.__send("motionstream.status", {
        node: "6", prompt_id: "p-2", state: "streaming", live_token: "tok-2",
        live_prompts: { prompts: [{ index: 0, start: 0 }, { index: 1, start: 5 }], text: false },
      }),
    );
    let shown = await row();
    assert.equal(shown.shown, true);
    assert.deepEqual(shown.options, ["prompt 1 (0 s)", "prompt 2 (5 s)"]);
    assert.equal(shown.textShown, false);
    await page.locator("#preview select").selectOption("1");
    await page.locator("#preview button", { hasText: "Switch" }).click();
    await page.waitForFunction(() => window.__node.motionstreamPlayer.promptRow.lastChild.textContent !== "");
    assert.deepEqual(await promptRequests(), [
      { prompt_id: "p-2", node_id: "6", token: "tok-2", client_id: "client-c", index: 1 },
    ]);
    assert.equal((await row()).note, "prompt 2 from the next chunk");

    // With a text encoder: Enter in the field sends the text; the server's refusal is shown.
    await page.evaluate(async () => {
      const { api } = await import("/scripts/api.js");
      api.requests.length = 0;
      const answer = api.fetchApi.bind(api);
      api.fetchApi = async (route, options) => {
        await answer(route, options);
        return new Response(JSON.stringify({ error: "the text is longer than 2000 characters" }), { status: 413 });
      };
      window.__send("motionstream.status", {
        node: "6", prompt_id: "p-3", state: "streaming", live_token: "tok-3",
        live_prompts: { prompts: [{ index: 0, start: 0 }], text: true },
      });
    });
    shown = await row();
    assert.equal(shown.textShown, true);
    assert.equal(shown.note, "", "a new stream starts with a clean row");
    await page.locator("#preview input[type=text]").fill("a red kite over the sea");
    await page.locator("#preview input[type=text]").press("Enter");
    await page.waitForFunction(() => window.__node.motionstreamPlayer.promptRow.lastChild.textContent !== "");
    assert.deepEqual(await promptRequests(), [
      { prompt_id: "p-3", node_id: "6", token: "tok-3", client_id: "client-c", text: "a red kite over the sea" },
    ]);
    assert.equal((await row()).note, "the new prompt refused: the text is longer than 2000 characters");

    // Once the stream ends the row goes away.
    await page.evaluate(() => window.__send("motionstream.status", { node: "6", prompt_id: "p-3", state: "done", frames: 0 }));
    assert.equal((await row()).shown, false);
    assert.deepEqual(errors, []);
    await page.close();
  });
});
