// Unit tests of js/track_editor_state.js: node --test tests/js/track_editor_state.test.mjs
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MAX_REGIONS,
  MIN_KEYFRAME_GAP,
  TrackEditorState,
  defaultRegionGrid,
  keyframesFromDrag,
  keyframesFromLiveDrag,
  parseTracksDocument,
  positionAt,
  regionField,
  simplifySamples,
} from "../../js/track_editor_state.js";

// A straight drag from (0.1, 0.2) to (0.5, 0.6) at constant speed over one second.
function straightDrag(count = 21) {
  return Array.from({ length: count }, (_, index) => {
    const fraction = index / (count - 1);
    return { t: 100 + fraction, x: 0.1 + 0.4 * fraction, y: 0.2 + 0.4 * fraction };
  });
}

function validDocument() {
  return {
    format: "motionstream-tracks",
    version: 1,
    width: 832,
    height: 480,
    fps: 16,
    duration: 5,
    tracks: [
      {
        id: 3,
        static: false,
        keyframes: [
          { t: 0, x: 0.25, y: 0.5 },
          { t: 1.5, x: 0.4, y: 0.55, visible: false },
          { t: 2, x: 0.45, y: 0.6 },
        ],
      },
      { id: 7, static: true, keyframes: [{ t: 0, x: 0.8, y: 0.2 }] },
    ],
  };
}

describe("drags become keyframes", () => {
  test("a straight constant-speed drag simplifies to its two ends spanning the clip", () => {
    const state = new TrackEditorState({ duration: 4 });
    const id = state.addTrackFromDrag(straightDrag());
    assert.equal(id, 0);
    assert.deepEqual(state.getTrack(id).keyframes, [
      { t: 0, x: 0.1, y: 0.2 },
      { t: 4, x: 0.5, y: 0.6 },
    ]);
    assert.equal(state.getTrack(id).static, false);
    assert.deepEqual(state.selection, { trackId: id, keyframeIndex: null });
  });

  test("a corner and a pause are kept, with the drag's own pacing", () => {
    const samples = [
      { t: 0.0, x: 0.1, y: 0.1 },
      { t: 0.5, x: 0.3, y: 0.1 },
      { t: 1.0, x: 0.5, y: 0.1 }, // corner
      { t: 2.0, x: 0.5, y: 0.1 }, // held still for a second
      { t: 2.5, x: 0.5, y: 0.3 },
      { t: 3.0, x: 0.5, y: 0.5 },
    ];
    const keyframes = keyframesFromDrag(samples, { start: 1, duration: 3 });
    assert.deepEqual(
      keyframes.map((keyframe) => [keyframe.t, keyframe.x, keyframe.y]),
      [
        [1, 0.1, 0.1],
        [2, 0.5, 0.1],
        [3, 0.5, 0.1],
        [4, 0.5, 0.5],
      ],
    );
  });

  test("the hold before moving and the pause before release are not part of the track", () => {
    const samples = [
      { t: 0.0, x: 0.2, y: 0.2 }, // pointer down
      { t: 0.4, x: 0.2001, y: 0.2 }, // jitter while holding
      { t: 0.5, x: 0.3, y: 0.2 },
      { t: 0.6, x: 0.4, y: 0.2 },
      { t: 1.6, x: 0.4, y: 0.2 }, // pointer up a second later
    ];
    const keyframes = keyframesFromDrag(samples, { start: 0, duration: 2 });
    assert.deepEqual(
      keyframes.map((keyframe) => [keyframe.t, keyframe.x, keyframe.y]),
      [
        [0, 0.2001, 0.2],
        [2, 0.4, 0.2],
      ],
    );
    const still = [0, 1, 2].map((t) => ({ t, x: 0.5, y: 0.5 }));
    assert.deepEqual(keyframesFromDrag(still, { start: 0, duration: 1 }), [
      { t: 0, x: 0.5, y: 0.5 },
      { t: 1, x: 0.5, y: 0.5 },
    ]);
  });

  test("simplification keeps every sample within the tolerance", () => {
    const samples = Array.from({ length: 200 }, (_, index) => ({
      t: index / 100,
      x: 0.5 + 0.3 * Math.cos(index / 30),
      y: 0.5 + 0.3 * Math.sin(index / 30),
    }));
    const kept = simplifySamples(samples, 0.002);
    assert.ok(kept.length < 60 && kept.length > 5, `kept ${kept.length}`);
    assert.equal(kept[0], samples[0]);
    assert.equal(kept.at(-1), samples.at(-1));
    for (const sample of samples) {
      const position = positionAt({ static: false, keyframes: kept }, sample.t);
      assert.ok(Math.hypot(position.x - sample.x, position.y - sample.y) <= 0.002 + 1e-12);
    }
  });

  test("samples without usable timestamps are paced evenly", () => {
    const samples = [0, 0.25, 0.5, 1].map((x) => ({ t: 7, x, y: 0.5 }));
    const keyframes = keyframesFromDrag(samples, { start: 0, duration: 3 });
    // Evenly paced by index: x moves 0.25, 0.25, 0.5 per step so the last step is a speed change.
    assert.deepEqual(
      keyframes.map((keyframe) => [keyframe.t, keyframe.x]),
      [
        [0, 0],
        [2, 0.5],
        [3, 1],
      ],
    );
  });

  test("keyframes never come closer than the minimum gap", () => {
    const samples = Array.from({ length: 50 }, (_, index) => ({ t: index, x: (index % 2) * 0.5, y: 0.1 }));
    const keyframes = keyframesFromDrag(samples, { start: 0, duration: 0.01 });
    for (let index = 1; index < keyframes.length; index += 1) {
      assert.ok(keyframes[index].t - keyframes[index - 1].t >= MIN_KEYFRAME_GAP - 1e-9);
    }
    assert.equal(keyframes[0].t, 0);
    assert.equal(keyframes[keyframes.length - 1].t, 0.01);
  });

  test("a drag needs two samples and a positive duration", () => {
    const state = new TrackEditorState();
    assert.throws(() => state.addTrackFromDrag([{ t: 0, x: 0.1, y: 0.1 }]), /at least two pointer samples/);
    assert.throws(() => state.addTrackFromDrag(straightDrag(), { duration: 0 }), /duration must be at least/);
    assert.equal(state.tracks.length, 0);
    assert.equal(state.canUndo, false);
  });
});

describe("editing", () => {
  test("anchors are static one-position tracks with increasing ids", () => {
    const state = new TrackEditorState();
    const trackId = state.addTrackFromDrag(straightDrag());
    const anchorId = state.addAnchor(0.8, 0.2);
    assert.equal(anchorId, trackId + 1);
    assert.deepEqual(state.getTrack(anchorId), { id: anchorId, static: true, keyframes: [{ t: 0, x: 0.8, y: 0.2 }] });
  });

  test("moving a track shifts every keyframe, clamped to the allowed range", () => {
    const state = new TrackEditorState();
    const id = state.addTrackFromDrag(straightDrag());
    state.moveTrack(id, 0.1, -0.05);
    assert.deepEqual(
      state.getTrack(id).keyframes.map((keyframe) => [keyframe.x, keyframe.y]),
      [
        [0.2, 0.15],
        [0.6, 0.55],
      ],
    );
    state.moveTrack(id, 5, 0);
    assert.deepEqual(
      state.getTrack(id).keyframes.map((keyframe) => keyframe.x),
      [1.6, 2],
    );
  });

  test("moving one keyframe leaves the others; moving an anchor's keyframe moves the anchor", () => {
    const state = new TrackEditorState();
    const id = state.addTrackFromDrag(straightDrag());
    state.moveKeyframe(id, 1, 0.9, 0.95);
    assert.deepEqual(state.getTrack(id).keyframes[0], { t: 0, x: 0.1, y: 0.2 });
    assert.deepEqual(state.getTrack(id).keyframes[1], { t: 5, x: 0.9, y: 0.95 });
    const anchor = state.addAnchor(0.5, 0.5);
    state.moveKeyframe(anchor, 0, 0.123456, 0.654321);
    assert.deepEqual(state.getTrack(anchor).keyframes, [{ t: 0, x: 0.1235, y: 0.6543 }]);
  });

  test("delete removes the track and its selection; ids are not reused", () => {
    const state = new TrackEditorState();
    const first = state.addTrackFromDrag(straightDrag());
    const second = state.addAnchor(0.3, 0.3);
    state.deleteTrack(second);
    assert.deepEqual(
      state.tracks.map((track) => track.id),
      [first],
    );
    assert.equal(state.selection, null);
    assert.equal(state.addAnchor(0.4, 0.4), second + 1);
    assert.throws(() => state.deleteTrack(99), /no track with id 99/);
  });

  test("clear empties the editor", () => {
    const state = new TrackEditorState();
    state.addTrackFromDrag(straightDrag());
    state.addAnchor(0.3, 0.3);
    state.clear();
    assert.equal(state.tracks.length, 0);
    assert.equal(state.selection, null);
  });

  test("per-track timing shifts and scales keyframe times", () => {
    const state = new TrackEditorState({ duration: 4 });
    const id = state.addTrackFromDrag([
      { t: 0, x: 0.1, y: 0.1 },
      { t: 1, x: 0.3, y: 0.1 },
      { t: 2, x: 0.3, y: 0.4 },
    ]);
    assert.deepEqual(state.trackTiming(id), { start: 0, duration: 4 });
    state.setTrackTiming(id, { start: 1, duration: 2 });
    assert.deepEqual(
      state.getTrack(id).keyframes.map((keyframe) => keyframe.t),
      [1, 2, 3],
    );
    state.setTrackTiming(id, { start: 0.5 });
    assert.deepEqual(state.trackTiming(id), { start: 0.5, duration: 2 });
    assert.throws(() => state.setTrackTiming(id, { duration: 0.0001 }), /closer than 1 ms/);
    assert.throws(() => state.setTrackTiming(id, { start: -1 }), /start must be >= 0/);
  });

  test("visibility of a keyframe can be switched off and shows in positions", () => {
    const state = new TrackEditorState({ duration: 2 });
    const id = state.addTrackFromDrag(straightDrag());
    state.setKeyframeVisible(id, 0, false);
    assert.equal(state.getTrack(id).keyframes[0].visible, false);
    const middle = positionAt(state.getTrack(id), 1);
    assert.equal(middle.visible, false);
    assert.ok(Math.abs(middle.x - 0.3) < 1e-12 && Math.abs(middle.y - 0.4) < 1e-12);
    assert.equal(positionAt(state.getTrack(id), 2.5), null);
  });

  test("state objects are frozen so snapshots cannot be changed behind the history", () => {
    const state = new TrackEditorState();
    const id = state.addAnchor(0.5, 0.5);
    assert.throws(() => {
      state.getTrack(id).keyframes[0].x = 0.9;
    }, TypeError);
  });
});

describe("undo and redo", () => {
  test("every edit can be undone and redone", () => {
    const state = new TrackEditorState();
    const id = state.addTrackFromDrag(straightDrag());
    const anchor = state.addAnchor(0.7, 0.7);
    state.moveTrack(id, 0.1, 0);
    state.deleteTrack(anchor);
    const final = state.exportJson();

    assert.ok(state.undo());
    assert.ok(state.getTrack(anchor));
    assert.ok(state.undo());
    assert.equal(state.getTrack(id).keyframes[0].x, 0.1);
    assert.ok(state.undo());
    assert.ok(state.undo());
    assert.equal(state.tracks.length, 0);
    assert.equal(state.undo(), false);

    while (state.redo());
    assert.equal(state.exportJson(), final);
  });

  test("a new edit drops the redo stack", () => {
    const state = new TrackEditorState();
    state.addAnchor(0.1, 0.1);
    state.undo();
    assert.ok(state.canRedo);
    state.addAnchor(0.2, 0.2);
    assert.equal(state.canRedo, false);
  });

  test("edits sharing a coalesce key are one undo step", () => {
    const state = new TrackEditorState();
    const id = state.addTrackFromDrag(straightDrag());
    for (let step = 0; step < 10; step += 1) state.moveTrack(id, 0.01, 0, { coalesce: "drag-1" });
    state.moveTrack(id, 0.01, 0, { coalesce: "drag-2" });
    assert.equal(state.getTrack(id).keyframes[0].x, 0.21);
    state.undo();
    assert.equal(state.getTrack(id).keyframes[0].x, 0.2);
    state.undo();
    assert.equal(state.getTrack(id).keyframes[0].x, 0.1);
  });

  test("history is bounded", () => {
    const state = new TrackEditorState({ historyLimit: 5 });
    for (let index = 0; index < 12; index += 1) state.addAnchor(index / 20, 0.5);
    let undone = 0;
    while (state.undo()) undone += 1;
    assert.equal(undone, 5);
    assert.equal(state.tracks.length, 7);
  });

  test("undo clears a selection whose track is gone", () => {
    const state = new TrackEditorState();
    state.addAnchor(0.1, 0.1);
    assert.ok(state.selection);
    state.undo();
    assert.equal(state.selection, null);
  });
});

describe("widget JSON", () => {
  test("export has a fixed key order and 4-decimal coordinates", () => {
    const state = new TrackEditorState({ width: 640, height: 360, fps: 16, duration: 2 });
    state.addTrackFromDrag([
      { t: 0, x: 1 / 3, y: 2 / 3 },
      { t: 1, x: 0.123456789, y: 0.987654321 },
    ]);
    state.addAnchor(0.5, 0.25);
    assert.equal(
      state.exportJson(),
      '{"format":"motionstream-tracks","version":1,"width":640,"height":360,"fps":16,"duration":2,' +
        '"tracks":[{"id":0,"static":false,"keyframes":[{"t":0,"x":0.3333,"y":0.6667},{"t":2,"x":0.1235,"y":0.9877}]},' +
        '{"id":1,"static":true,"keyframes":[{"t":0,"x":0.5,"y":0.25}]}]}',
    );
  });

  test("import then export round-trips, keeping ids, order and visibility", () => {
    const state = new TrackEditorState();
    state.importJson(JSON.stringify(validDocument()));
    const exported = state.exportJson();
    assert.deepEqual(JSON.parse(exported), validDocument());
    const again = new TrackEditorState();
    again.importJson(exported);
    assert.equal(again.exportJson(), exported);
    // New ids continue after the largest imported one.
    assert.equal(state.addAnchor(0.1, 0.1), 8);
  });

  test("import sorts keyframes by time, fills defaults and is undoable", () => {
    const state = new TrackEditorState();
    state.addAnchor(0.9, 0.9);
    const before = state.exportJson();
    state.importJson({
      format: "motionstream-tracks",
      version: 1,
      width: 100,
      height: 50,
      extra: "ignored",
      tracks: [{ id: 1, keyframes: [{ t: 2, x: 0.5, y: 0.5 }, { t: 1, x: 0.25, y: 0.5 }] }],
    });
    const document = state.toDocument();
    assert.equal(document.fps, 16);
    assert.equal(document.duration, 2);
    assert.equal("extra" in document, false);
    assert.deepEqual(document.tracks[0], {
      id: 1,
      static: false,
      keyframes: [
        { t: 1, x: 0.25, y: 0.5 },
        { t: 2, x: 0.5, y: 0.5 },
      ],
    });
    state.undo();
    assert.equal(state.exportJson(), before);
  });

  test("an empty track list is accepted", () => {
    const state = new TrackEditorState();
    state.importJson({ ...validDocument(), tracks: [] });
    assert.equal(state.tracks.length, 0);
  });

  const invalid = [
    ["not json", "{", /not valid JSON/],
    ["empty text", "  ", /empty/],
    ["not an object", "[1]", /must be an object/],
    ["wrong format", { ...validDocument(), format: "other" }, /not a "motionstream-tracks" document/],
    ["wrong version", { ...validDocument(), version: 3 }, /unsupported widget JSON version 3/],
    ["version as text", { ...validDocument(), version: "1" }, /version must be an integer/],
    ["fractional width", { ...validDocument(), width: 10.5 }, /width must be an integer/],
    ["zero height", { ...validDocument(), height: 0 }, /height must be in \[1, 16384\]/],
    ["fps zero", { ...validDocument(), fps: 0 }, /fps must be in \(0, 1000\]/],
    ["negative duration", { ...validDocument(), duration: -1 }, /duration must not be negative/],
    ["too many frames", { ...validDocument(), duration: 1000 }, /too many frames/],
    ["tracks not a list", { ...validDocument(), tracks: {} }, /'tracks' must be a list/],
    ["track not an object", { ...validDocument(), tracks: [5] }, /track 0 must be an object/],
    ["id missing", { ...validDocument(), tracks: [{ keyframes: [{ t: 0, x: 0, y: 0 }] }] }, /id of track 0 must be an integer/],
    ["id too large", { ...validDocument(), tracks: [{ id: 2 ** 24, keyframes: [{ t: 0, x: 0, y: 0 }] }] }, /must be in \[0, 16777215\]/],
    [
      "duplicate ids",
      { ...validDocument(), tracks: [validDocument().tracks[0], { ...validDocument().tracks[1], id: 3 }] },
      /ids must be unique/,
    ],
    ["static not boolean", { ...validDocument(), tracks: [{ id: 1, static: 1, keyframes: [{ t: 0, x: 0, y: 0 }] }] }, /'static' of track 1 must be true or false/],
    ["no keyframes", { ...validDocument(), tracks: [{ id: 1, keyframes: [] }] }, /track 1 needs a non-empty 'keyframes' list/],
    ["keyframe not an object", { ...validDocument(), tracks: [{ id: 1, keyframes: [[0, 0, 0]] }] }, /keyframe 0 of track 1 must be an object/],
    ["t missing", { ...validDocument(), tracks: [{ id: 1, keyframes: [{ x: 0, y: 0 }] }] }, /'t' of keyframe 0 of track 1 must be a number/],
    ["negative t", { ...validDocument(), tracks: [{ id: 1, keyframes: [{ t: -1, x: 0, y: 0 }] }] }, /must not be negative/],
    ["far outside", { ...validDocument(), tracks: [{ id: 1, keyframes: [{ t: 0, x: 2.5, y: 0 }] }] }, /lies far outside the frame/],
    ["x as text", { ...validDocument(), tracks: [{ id: 1, keyframes: [{ t: 0, x: "0.5", y: 0 }] }] }, /'x' of keyframe 0 of track 1 must be a number/],
    ["visible not boolean", { ...validDocument(), tracks: [{ id: 1, keyframes: [{ t: 0, x: 0, y: 0, visible: 0 }] }] }, /'visible' of keyframe 0 of track 1/],
    [
      "same time twice",
      { ...validDocument(), tracks: [{ id: 1, keyframes: [{ t: 1, x: 0, y: 0 }, { t: 1, x: 0.5, y: 0 }] }] },
      /two keyframes at the same time/,
    ],
    [
      "moving static track",
      { ...validDocument(), tracks: [{ id: 1, static: true, keyframes: [{ t: 0, x: 0, y: 0 }, { t: 1, x: 0.5, y: 0 }] }] },
      /static track 1 must not move/,
    ],
  ];
  for (const [name, source, message] of invalid) {
    test(`rejects ${name}`, () => {
      assert.throws(() => parseTracksDocument(typeof source === "string" ? source : JSON.stringify(source)), message);
      const state = new TrackEditorState();
      state.addAnchor(0.5, 0.5);
      const before = state.exportJson();
      assert.throws(() => state.importJson(source), message);
      assert.equal(state.exportJson(), before, "a failed import leaves the state alone");
      assert.equal(state.canRedo, false);
    });
  }
});

describe("positions over time follow the importer's rules", () => {
  const moving = { static: false, keyframes: [{ t: 1, x: 0, y: 0 }, { t: 3, x: 1, y: 0.5 }] };
  const anchor = { static: true, keyframes: [{ t: 1, x: 0.5, y: 0.5 }] };

  test("invisible before the first keyframe", () => {
    assert.equal(positionAt(moving, 0.5), null);
    assert.equal(positionAt(anchor, 0.5), null);
  });

  test("linear between keyframes", () => {
    assert.deepEqual(positionAt(moving, 2), { x: 0.5, y: 0.25, visible: true });
    assert.deepEqual(positionAt(moving, 3), { x: 1, y: 0.5, visible: true });
  });

  test("after the end a moving track disappears and an anchor holds", () => {
    assert.equal(positionAt(moving, 3.5), null);
    assert.deepEqual(positionAt(anchor, 10), { x: 0.5, y: 0.5, visible: true });
  });
});

describe("region drags (widget JSON version 2)", () => {
  test("a drawn region drag is a blue 'path' handle with a radius, spanning the clip like a track", () => {
    const state = new TrackEditorState({ duration: 4 });
    const id = state.addRegionDrag(straightDrag(), { radius: 0.2 });
    const region = state.getTrack(id);
    assert.deepEqual(region.region, { kind: "path", radius: 0.2 });
    assert.deepEqual(region.keyframes, [
      { t: 0, x: 0.1, y: 0.2 },
      { t: 4, x: 0.5, y: 0.6 },
    ]);
    assert.deepEqual(state.regions.map((track) => track.id), [id]);
    const document = state.toDocument();
    assert.equal(document.version, 2);
    assert.deepEqual(document.tracks, []);
    assert.equal(document.region_grid, 30, "the default grid: one track per 16 px of the shorter side");
    assert.deepEqual(document.regions, [{ id, kind: "path", radius: 0.2, keyframes: region.keyframes.map((k) => ({ ...k })) }]);
  });

  test("without region drags the document stays version 1", () => {
    const state = new TrackEditorState();
    state.addTrackFromDrag(straightDrag());
    const document = state.toDocument();
    assert.equal(document.version, 1);
    assert.equal("regions" in document, false);
    assert.equal("region_grid" in document, false);
  });

  test("a live region drag keeps the pointer's real-time pacing from the stream's clock, holds included", () => {
    const state = new TrackEditorState({ duration: 5 });
    const samples = [
      { t: 50.0, x: 0.3, y: 0.5 },
      { t: 50.4, x: 0.3, y: 0.5 }, // held still for 0.4 s first
      { t: 50.9, x: 0.5, y: 0.5 },
      { t: 51.2, x: 0.5, y: 0.5 },
    ];
    const id = state.addRegionDrag(samples, { live: true, start: 2.25, radius: 0.1 });
    const region = state.getTrack(id);
    assert.equal(region.region.kind, "live");
    assert.deepEqual(region.keyframes, [
      { t: 2.25, x: 0.3, y: 0.5 },
      { t: 2.65, x: 0.3, y: 0.5 },
      { t: 3.15, x: 0.5, y: 0.5 },
      { t: 3.45, x: 0.5, y: 0.5 },
    ]);
    assert.deepEqual(keyframesFromLiveDrag([{ t: 7, x: 0.1, y: 0.1 }], { start: 1 }), [{ t: 1, x: 0.1, y: 0.1 }]);
  });

  test("region anchors, radius edits, undo and the limit", () => {
    const state = new TrackEditorState();
    const anchor = state.addRegionAnchor(0.8, 0.2, { radius: 0.12, start: 1.5 });
    assert.deepEqual(state.getTrack(anchor), {
      id: anchor,
      static: true,
      keyframes: [{ t: 1.5, x: 0.8, y: 0.2 }],
      region: { kind: "anchor", radius: 0.12 },
    });
    state.setRegionRadius(anchor, 0.3);
    assert.equal(state.getTrack(anchor).region.radius, 0.3);
    state.undo();
    assert.equal(state.getTrack(anchor).region.radius, 0.12);
    state.moveTrack(anchor, 0.1, 0);
    assert.deepEqual(state.getTrack(anchor).region, { kind: "anchor", radius: 0.12 }, "moves keep the region");
    assert.throws(() => state.setKeyframeVisible(anchor, 0, false), /no visibility/);
    assert.throws(() => state.addRegionAnchor(0.5, 0.5, { radius: 0 }), /radius must be in/);
    const track = state.addTrackFromDrag(straightDrag());
    assert.throws(() => state.setRegionRadius(track, 0.2), /not a region drag/);
    for (let count = state.regions.length; count < MAX_REGIONS; count += 1) state.addRegionAnchor(0.5, 0.5);
    assert.throws(() => state.addRegionAnchor(0.5, 0.5), /at most 64 region drags/);
    state.addTrackFromDrag(straightDrag()); // point tracks are not limited by it
  });

  test("documents with regions round-trip, and bad region fields are named", () => {
    const document = {
      ...validDocument(),
      version: 2,
      region_grid: 20,
      regions: [
        { id: 10, kind: "live", radius: 0.1, keyframes: [{ t: 1, x: 0.3, y: 0.3 }, { t: 2, x: 0.4, y: 0.3 }] },
        { id: 11, kind: "anchor", radius: 0.2, keyframes: [{ t: 0, x: 0.6, y: 0.6 }] },
      ],
    };
    const state = new TrackEditorState();
    state.importJson(document);
    assert.equal(state.regionGrid, 20);
    assert.deepEqual(JSON.parse(state.exportJson()), document);
    state.addRegionDrag(straightDrag());
    assert.ok(state.getTrack(12).region, "new ids follow the largest id of tracks and regions");
    state.undo();
    state.undo();
    assert.equal(state.regionGrid, 30, "undo restores the grid size with the tracks");

    const bad = (changes) => ({ ...document, ...changes });
    const region = (changes) => bad({ regions: [{ ...document.regions[0], ...changes }] });
    const cases = [
      [{ ...document, version: 1 }, /'regions' need widget JSON version 2/],
      [bad({ regions: {} }), /'regions' of the widget JSON must be a list/],
      [bad({ region_grid: 65 }), /region_grid must be in \[1, 64\]/],
      [region({ kind: "drag" }), /'kind' of region 10 must be one of path, live, anchor/],
      [region({ radius: 0 }), /'radius' of region 10 must be in \(0, 2\]/],
      [region({ radius: "0.1" }), /'radius' of region 10 must be a number/],
      [region({ keyframes: [] }), /region 10 needs a non-empty 'keyframes' list/],
      [region({ keyframes: [{ t: 0, x: 3, y: 0 }] }), /keyframe 0 of region 10 .* lies far outside the frame/],
      [region({ id: 3 }), /id 3 is both a track's and a region's/],
      [bad({ regions: [document.regions[0], document.regions[0]] }), /region ids must be unique/],
      [region({ kind: "anchor" }), /anchor region 10 must not move/],
      [bad({ regions: Array.from({ length: 65 }, (_, id) => ({ ...document.regions[1], id: 100 + id })) }), /too many region drags/],
    ];
    for (const [source, message] of cases) {
      assert.throws(() => parseTracksDocument(JSON.stringify(source)), message);
    }
  });

  test("the draft of a live region drag steers with a small document", () => {
    const state = new TrackEditorState({ duration: 5 });
    state.addTrackFromDrag(straightDrag());
    const samples = [
      { t: 10, x: 0.5, y: 0.5 },
      { t: 10.5, x: 0.6, y: 0.5 },
    ];
    const draft = JSON.parse(state.exportJsonWithDraft(samples, { region: { radius: 0.2, live: true, start: 3 } }));
    assert.equal(draft.version, 2);
    assert.equal(draft.tracks.length, 1);
    assert.deepEqual(draft.regions, [
      { id: 1, kind: "live", radius: 0.2, keyframes: [{ t: 3, x: 0.5, y: 0.5 }, { t: 3.5, x: 0.6, y: 0.5 }] },
    ]);
    assert.ok(JSON.stringify(draft).length < 400, "a handle, not a grid of tracks");
    assert.equal(state.regions.length, 0, "a draft changes nothing");
  });
});

describe("the region grid preview follows the DragController's rules", () => {
  const drag = (id, keyframes, { radius = 0.2, kind = "path" } = {}) => ({
    id,
    static: kind === "anchor",
    keyframes,
    region: { kind, radius },
  });
  const basePoints = Float64Array.from([0.5, 0.5, 0.55, 0.5, 0.9, 0.9]);
  const move = (field, t, point) => {
    const positions = field.positionsAt(t);
    return [positions[2 * point] - basePoints[2 * point], positions[2 * point + 1] - basePoints[2 * point + 1]];
  };

  test("a drag moves the points within its radius by the falloff, smoothly, and leaves them where dropped", () => {
    const field = regionField([drag(0, [{ t: 1, x: 0.5, y: 0.5 }, { t: 3, x: 0.7, y: 0.5 }])], { basePoints });
    assert.deepEqual(move(field, 0.5, 0), [0, 0], "untouched before the drag");
    assert.ok(Math.abs(move(field, 2, 0)[0] - 0.1) < 1e-12, "halfway at half time");
    assert.ok(Math.abs(move(field, 9, 0)[0] - 0.2) < 1e-12, "held after the drag");
    const falloff = 0.5 * (1 + Math.cos((Math.PI * 0.05) / 0.2));
    assert.ok(Math.abs(move(field, 9, 1)[0] - 0.2 * falloff) < 1e-12);
    assert.deepEqual(move(field, 9, 2), [0, 0], "outside the radius");
  });

  test("radii are measured in units of the shorter side", () => {
    const wide = regionField([drag(0, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.5, y: 0.6 }], { radius: 0.06 })], {
      aspect: 2,
      basePoints,
    });
    assert.deepEqual(move(wide, 1, 1), [0, 0], "0.05 of the width is 0.1 of the height: outside 0.06");
    const tall = regionField([drag(0, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.5, y: 0.6 }], { radius: 0.06 })], {
      aspect: 0.5,
      basePoints,
    });
    assert.ok(move(tall, 1, 1)[1] > 0, "0.05 of the width is the shorter side's 0.05: inside");
  });

  test("anchors pin later drags; drags one after another add up; drags at the same time share", () => {
    const anchored = regionField(
      [drag(1, [{ t: 0, x: 0.5, y: 0.5 }], { kind: "anchor" }), drag(2, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.7, y: 0.5 }])],
      { basePoints },
    );
    assert.deepEqual(move(anchored, 2, 0), [0, 0]);
    const lateAnchor = regionField(
      [drag(1, [{ t: 2, x: 0.5, y: 0.5 }], { kind: "anchor" }), drag(2, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.7, y: 0.5 }])],
      { basePoints },
    );
    assert.ok(Math.abs(move(lateAnchor, 3, 0)[0] - 0.2) < 1e-12, "an anchor set later does not undo an earlier drag");
    const sequential = regionField(
      [drag(3, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.6, y: 0.5 }]), drag(4, [{ t: 2, x: 0.6, y: 0.5 }, { t: 3, x: 0.7, y: 0.5 }])],
      { basePoints },
    );
    assert.ok(Math.abs(move(sequential, 1.5, 0)[0] - 0.1) < 1e-12);
    assert.ok(Math.abs(move(sequential, 4, 0)[0] - 0.2) < 1e-12, "the second drag grabs the region where the first left it");
    const together = regionField(
      [drag(5, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.7, y: 0.5 }]), drag(6, [{ t: 0, x: 0.5, y: 0.5 }, { t: 1, x: 0.5, y: 0.7 }])],
      { basePoints },
    );
    const [dx, dy] = move(together, 1, 0);
    assert.ok(Math.abs(dx - 0.1) < 1e-12 && Math.abs(dy - 0.1) < 1e-12, "two handles on one point blend");
  });
});

describe("the region grid size", () => {
  test("defaults to one track per 16 pixels of the shorter side, from 4 to 50", () => {
    assert.deepEqual(
      [defaultRegionGrid(128, 128), defaultRegionGrid(832, 480), defaultRegionGrid(4096, 2048), defaultRegionGrid(16, 40)],
      [8, 30, 50, 4],
    );
    const state = new TrackEditorState({ width: 128, height: 128 });
    state.addRegionAnchor(0.5, 0.5);
    assert.equal(state.toDocument().region_grid, 8);
    state.setClip({ width: 480, height: 480 }, { record: false });
    assert.equal(state.toDocument().region_grid, 30, "follows the frame size until chosen");
  });

  test("can be chosen, undoably, and is bounded", () => {
    const state = new TrackEditorState();
    state.addRegionAnchor(0.5, 0.5);
    state.setRegionGrid(12);
    assert.equal(state.toDocument().region_grid, 12);
    assert.equal(state.regionGridChosen, true);
    state.undo();
    assert.equal(state.toDocument().region_grid, 30);
    assert.throws(() => state.setRegionGrid(65), /region grid must be in \[1, 64\]/);
    assert.throws(() => state.setRegionGrid(2.5), /region grid must be an integer/);
  });
});
