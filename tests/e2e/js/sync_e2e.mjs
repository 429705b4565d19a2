// matrix-js-sdk's own sync loop against matrixhs: bob's client sees alice's message.
import * as sdk from "matrix-js-sdk";

const base = process.env.BASE_URL;
const deadline = setTimeout(() => { console.log(JSON.stringify({ ok: false, error: "timeout" })); process.exit(1); }, 30000);

async function register(name) {
  const url = `${base}/_matrix/client/v3/register`;
  const body = { username: name, password: `pw-${name}` };
  let r = await fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
  const challenge = await r.json();
  r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, auth: { type: "m.login.dummy", session: challenge.session } }) });
  const done = await r.json();
  if (!done.access_token) throw new Error(`register ${name}: ${JSON.stringify(done)}`);
  return sdk.createClient({ baseUrl: base, accessToken: done.access_token, userId: done.user_id, deviceId: done.device_id });
}

const suffix = Date.now().toString(36);
const alice = await register(`alice${suffix}`);
const bob = await register(`bob${suffix}`);
const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "js-sdk room" });
await bob.joinRoom(roomId);

const received = new Promise((resolve) => {
  bob.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
    if (!toStartOfTimeline && event.getType() === "m.room.message" && event.getContent().body === "hello from alice") {
      resolve({ sender: event.getSender(), roomName: room?.name });
    }
  });
});
const prepared = new Promise((resolve, reject) => {
  bob.on(sdk.ClientEvent.Sync, (state, prev, data) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
  });
});
await bob.startClient({ initialSyncLimit: 10 });
await prepared;
const start = Date.now();
await alice.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body: "hello from alice" });
const got = await received;
bob.stopClient();
clearTimeout(deadline);
console.log(JSON.stringify({ ok: true, latency_ms: Date.now() - start, ...got }));
process.exit(0);
