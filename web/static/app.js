/*
 * The demo page's client (web/templates/index.html). Vanilla JS, no build step.
 *
 * One Engine.IO session carries two Socket.IO namespaces: the main one (the Flask-SocketIO example
 * app's events, notifications, jobs) and /chat. Both therefore live on the same replica.
 *
 * Event names come from the contract (common/contract.py), rendered into the page by web/page.py
 * as JSON: this file spells no event name itself. Only Socket.IO's reserved events ("connect",
 * "disconnect", "connect_error") and the Engine.IO ones are written out.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("page-config").textContent);
  const EVENT = config.events;
  const NAMESPACE = config.namespaces;

  const ACK_TIMEOUT_MS = 10000;
  const PING_EVERY_MS = 2000;
  const LATENCY_SAMPLES = 30;
  const LOG_LIMIT = 200;
  const REMEMBERED_NOTIFICATIONS = 1000;

  const byId = (id) => document.getElementById(id);

  // ?transport=polling keeps the client on HTTP long-polling (no WebSocket upgrade);
  // ?transport=websocket skips long-polling. Anything else: polling first, then upgrade.
  function chosenTransports() {
    const wanted = new URLSearchParams(window.location.search).get("transport");
    return wanted === "polling" || wanted === "websocket" ? [wanted] : ["polling", "websocket"];
  }

  // The first io() call creates the connection (the Manager); the second one reuses it.
  // `recover: true` asks for connection state recovery: after a lost connection the server gives
  // back the session, its rooms and what it missed (`socket.recovered`). Every event then carries
  // one more argument, its offset, after the event's own: handlers check an ack's type.
  const RECOVER = { recover: true };
  const socket = io(NAMESPACE.main, { transports: chosenTransports(), auth: { ...RECOVER } });
  const chat = io(NAMESPACE.chat, { auth: { ...RECOVER } });

  // -- small helpers ---------------------------------------------------------------------------

  function timeElement(date) {
    const time = document.createElement("time");
    time.dateTime = date.toISOString();
    time.textContent = date.toLocaleTimeString();
    return time;
  }

  function describe(data) {
    if (data && typeof data === "object" && typeof data.text === "string") return data.text;
    return typeof data === "string" ? data : JSON.stringify(data);
  }

  function isError(reply) {
    return reply !== null && typeof reply === "object" && typeof reply.error === "string";
  }

  /** Add a line to the "Received" log, dropping the oldest beyond LOG_LIMIT. */
  function log(kind, text) {
    const list = byId("log");
    const item = document.createElement("li");
    item.dataset.kind = kind;
    const label = document.createElement("span");
    label.className = "log-kind";
    label.textContent = kind;
    item.append(timeElement(new Date()), " ", label, " ", text);
    list.append(item);
    while (list.children.length > LOG_LIMIT) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  /**
   * Emit with an acknowledgement; `onReply` gets the reply. Failures go to the log, and to
   * `onFailure` (if given) as a sentence, for a control that shows its own outcome.
   * A `payload` of undefined sends no argument at all (handlers without parameters need that).
   */
  function request(target, event, payload, onReply, onFailure) {
    const args = payload === undefined ? [] : [payload];
    target.timeout(ACK_TIMEOUT_MS).emit(event, ...args, (err, reply) => {
      if (err) {
        const reason = "no answer from the server within " + ACK_TIMEOUT_MS / 1000 + " s";
        log(event, reason);
        if (onFailure) onFailure(reason);
      } else if (isError(reply)) {
        // The error also arrives as an error_response event, which logs it.
        if (onFailure) onFailure(reply.error);
      } else {
        onReply(reply);
      }
    });
  }

  function onSubmit(formId, handler) {
    const form = byId(formId);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      handler(new FormData(form), form);
    });
  }

  // -- connection state ------------------------------------------------------------------------

  function setStatus(state, text) {
    const status = byId("status");
    status.dataset.state = state;
    status.textContent = text;
    byId("disconnect-button").disabled = state !== "connected";
    byId("connect-button").disabled = state !== "disconnected";
    if (state !== "connected") {
      byId("recovery").textContent = "–";
      byId("replica").textContent = "–";
      byId("transport").textContent = "–";
      byId("session").textContent = "–";
    }
  }

  /** Ask the replica who it is: its id, the transport it sees, the signed-in user. */
  function refreshServerInfo() {
    request(socket, EVENT.SERVER_INFO, undefined, (info) => {
      byId("replica").textContent = info.replica;
      byId("replica").title = info.address + " (pid " + info.pid + ")";
      byId("transport").textContent = info.transport || socket.io.engine.transport.name;
      showUser(info.user);
    });
  }

  // "Reconnected as" means nothing until the first connection has been lost.
  let connectedBefore = false;

  socket.on("connect", () => {
    setStatus("connected", "connected");
    // The Engine.IO session id starts with the replica's address: nginx routes by it.
    byId("session").textContent = socket.io.engine.id;
    let connected = "connected to the main namespace";
    if (!connectedBefore) {
      byId("recovery").textContent = "first connection";
    } else if (socket.recovered) {
      byId("recovery").textContent = "recovered";
      connected = "reconnected: session, rooms and missed events recovered";
    } else {
      byId("recovery").textContent = "new session";
      connected = "reconnected as a new session";
    }
    connectedBefore = true;
    refreshServerInfo();
    log("connect", connected);
    socket.emit(EVENT.MY_EVENT, { data: "I'm connected!" });
    rejoinRooms();
  });

  socket.on("disconnect", (reason) => {
    // After these two reasons Socket.IO does not reconnect by itself; after any other it does.
    const final = reason === "io server disconnect" || reason === "io client disconnect";
    setStatus(final ? "disconnected" : "reconnecting", final ? "disconnected" : "reconnecting…");
    log("disconnect", reason);
  });

  socket.on("connect_error", (error) => {
    // `socket.active` is false when the server refused the connection (a bad token, say).
    setStatus(socket.active ? "reconnecting" : "disconnected",
      socket.active ? "reconnecting…" : "refused: " + error.message);
    log("connect_error", error.message);
  });

  socket.io.on("open", () => {
    socket.io.engine.on("upgrade", (transport) => {
      log("upgrade", "transport is now " + transport.name);
      refreshServerInfo();
    });
  });

  byId("disconnect-button").addEventListener("click", () => {
    socket.emit(EVENT.DISCONNECT_REQUEST);
  });

  byId("connect-button").addEventListener("click", () => {
    setStatus("connecting", "connecting…");
    socket.connect();
  });

  // Latency: the my_ping ack carries our timestamp back.
  const latencies = [];
  window.setInterval(() => {
    if (!socket.connected) return;
    socket.timeout(ACK_TIMEOUT_MS).emit(EVENT.MY_PING, Date.now(), (err, sentAt) => {
      if (err || typeof sentAt !== "number") return;
      latencies.push(Date.now() - sentAt);
      latencies.splice(0, latencies.length - LATENCY_SAMPLES);
      const average = latencies.reduce((sum, value) => sum + value, 0) / latencies.length;
      byId("latency").textContent = average.toFixed(1) + " ms";
    });
  }, PING_EVERY_MS);

  // -- identity --------------------------------------------------------------------------------

  /** Reconnect the main namespace so the server sees the new `auth` (same replica, same session). */
  function reconnectWith(auth) {
    socket.auth = { ...auth, ...RECOVER };
    socket.disconnect();
    setStatus("connecting", "connecting…");
    socket.connect();
  }

  /** Why sign-in is unavailable, on the page (not only in the log), and its form disabled. */
  function signInUnavailable(reason) {
    byId("identity-state").textContent = "Sign-in is unavailable: " + reason;
    byId("identity-state").dataset.state = "unavailable";
    for (const control of byId("identity-form").elements) control.disabled = true;
    byId("job-sign-in-unavailable").hidden = false;
  }

  /**
   * Who the server says this connection is (null: anonymous). Signing out and starting a job
   * make sense only when signed in (the server refuses jobs to anonymous connections).
   */
  function showUser(user) {
    byId("user").textContent = user || "anonymous";
    byId("sign-out-button").disabled = !user;
    byId("job-start-button").disabled = !user;
    byId("job-requirement").hidden = Boolean(user);
  }

  if (!config.demo_login.enabled) signInUnavailable(config.demo_login.reason);

  onSubmit("identity-form", async (data) => {
    const user = data.get("user").trim();
    if (!user) return;
    try {
      const response = await fetch(config.urls.demo_token, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: user }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok || typeof body.token !== "string") {
        const reason = body.error || "HTTP " + response.status;
        log("identity", "no token for " + user + ": " + reason);
        if (response.status === 403) signInUnavailable(reason);
        else byId("identity-state").textContent = "Sign-in failed: " + reason;
        return;
      }
      byId("identity-state").textContent = "Signed in as " + user + ".";
      log("identity", "signed in as " + user + "; reconnecting with the token");
      reconnectWith({ token: body.token });
    } catch (error) {
      log("identity", "token request failed: " + error.message);
    }
  });

  byId("sign-out-button").addEventListener("click", () => {
    log("identity", "signed out; reconnecting anonymously");
    byId("identity-state").textContent = "Signed out.";
    reconnectWith({});
  });

  // -- the example app's events ----------------------------------------------------------------

  socket.on(EVENT.MY_RESPONSE, (msg, ack) => {
    // Events pushed from a backend (POST /api/emit) may carry no count.
    const count = typeof msg.count === "number" ? "#" + msg.count + ": " : "";
    log(EVENT.MY_RESPONSE, count + describe(msg.data));
    if (typeof ack === "function") ack(); // disconnect_request waits for it before disconnecting us
  });

  socket.on(EVENT.ERROR_RESPONSE, (err) => log(EVENT.ERROR_RESPONSE, err.event + ": " + err.error));
  chat.on(EVENT.ERROR_RESPONSE, (err) => log(EVENT.ERROR_RESPONSE, "chat " + err.event + ": " + err.error));

  socket.on(EVENT.CLIENT_QUESTION, (msg, ack) => {
    log(EVENT.CLIENT_QUESTION, describe(msg.data));
    if (typeof ack === "function") ack("answered by the demo page");
  });

  socket.on(EVENT.SERVER_EVENT, (msg) => {
    log(EVENT.SERVER_EVENT, "#" + msg.count + ": " + describe(msg.data));
  });

  onSubmit("echo-form", (data) => socket.emit(EVENT.MY_EVENT, { data: data.get("data") }));
  onSubmit("broadcast-form", (data) => socket.emit(EVENT.MY_BROADCAST_EVENT, { data: data.get("data") }));
  // -- rooms: joined again after every reconnection --------------------------------------------

  // The rooms this page joined. A reconnection (a lost network, a replica that died or drained,
  // signing in or out) is a new session on the server, in none of them: the page joins them
  // again on every connect. The server restores only the user's own room, from the token.
  const joinedRooms = new Set();

  function showRooms() {
    byId("joined-rooms").textContent = joinedRooms.size ? [...joinedRooms].join(", ") : "none";
  }

  function joinRoom(room) {
    request(socket, EVENT.JOIN, { room: room }, () => {
      joinedRooms.add(room);
      showRooms();
    });
  }

  function forgetRoom(room) {
    joinedRooms.delete(room);
    showRooms();
  }

  function rejoinRooms() {
    if (!joinedRooms.size) return;
    log("rooms", "joining again: " + [...joinedRooms].join(", "));
    for (const room of joinedRooms) joinRoom(room);
  }

  onSubmit("join-room-form", (data) => joinRoom(data.get("room")));
  onSubmit("leave-room-form", (data) => {
    forgetRoom(data.get("room"));
    socket.emit(EVENT.LEAVE, { room: data.get("room") });
  });
  onSubmit("close-room-form", (data) => {
    forgetRoom(data.get("room"));
    socket.emit(EVENT.CLOSE_ROOM, { room: data.get("room") });
  });
  onSubmit("room-message-form", (data) =>
    socket.emit(EVENT.MY_ROOM_EVENT, { room: data.get("room"), data: data.get("data") }));

  // -- chat ------------------------------------------------------------------------------------

  let chatRoom = null; // the room "Say" talks in
  let chatName = null;
  // Who is in chatRoom, on every replica: the join answer's list, then the presence events (EVENT.PRESENCE).
  // Signed-in users by id, the others counted.
  const chatMembers = { users: new Set(), moreUsers: 0, anonymous: 0 };

  function showChatMembers() {
    const parts = [...chatMembers.users].sort();
    if (chatMembers.moreUsers) parts.push(chatMembers.moreUsers + " more");
    if (chatMembers.anonymous) parts.push(chatMembers.anonymous + " anonymous");
    byId("chat-members").textContent = chatRoom ? "Members of #" + chatRoom + ": " + (parts.join(", ") || "nobody") : "";
  }

  function setChatEnabled(enabled) {
    for (const control of byId("chat-say-form").elements) control.disabled = !enabled;
  }

  function joinChat(room, name) {
    request(chat, EVENT.CHAT_JOIN, { room: room, name: name }, (reply) => {
      chatRoom = reply.room;
      chatName = name;
      byId("chat-state").textContent =
        "In #" + reply.room + " as " + name + " (on " + reply.replica + ").";
      chatMembers.users = new Set(reply.members.users);
      chatMembers.moreUsers = reply.members.more_users; // not listed by the server
      chatMembers.anonymous = reply.members.anonymous;
      showChatMembers();
      setChatEnabled(true);
    });
  }

  onSubmit("chat-join-form", (data) => joinChat(data.get("room").trim(), data.get("name").trim()));

  onSubmit("chat-say-form", (data, form) => {
    request(chat, EVENT.CHAT_SAY, { room: chatRoom, text: data.get("text") }, () => form.reset());
  });

  chat.on("connect", () => {
    // A reconnection is a new session on the server: its rooms are gone, so join again.
    if (chatRoom) joinChat(chatRoom, chatName);
  });

  chat.on("disconnect", () => {
    setChatEnabled(false);
    if (chatRoom) byId("chat-state").textContent = "Disconnected; rejoining #" + chatRoom + " when back.";
  });

  chat.on(EVENT.PRESENCE, (change) => {
    if (!change || change.room !== chatRoom) return;
    for (const user of change.joined) chatMembers.users.add(user);
    for (const user of change.left) chatMembers.users.delete(user);
    chatMembers.moreUsers = Math.max(0, change.users - chatMembers.users.size);
    chatMembers.anonymous = change.anonymous;
    showChatMembers();
  });

  chat.on(EVENT.CHAT_MESSAGE, (msg) => {
    const item = document.createElement("li");
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.append(timeElement(new Date(msg.sent_at)), " #" + msg.room + " via " + msg.replica);
    const name = document.createElement("strong");
    name.textContent = msg.name;
    item.append(meta, " ", name, ": ", msg.text);
    byId("chat-log").append(item);
    item.scrollIntoView({ block: "nearest" });
  });

  // -- notifications (pushed through the message queue; may arrive twice) ---------------------

  const seenNotifications = new Set();

  socket.on(EVENT.NOTIFICATION, (msg) => {
    if (!msg || seenNotifications.has(msg.id)) return;
    seenNotifications.add(msg.id);
    if (seenNotifications.size > REMEMBERED_NOTIFICATIONS) {
      seenNotifications.delete(seenNotifications.values().next().value);
    }
    const item = document.createElement("li");
    item.dataset.id = msg.id;
    item.append(timeElement(new Date(msg.created_at)), " ", describe(msg.data));
    byId("notifications").prepend(item);
    byId("notifications-empty").hidden = true;
    log(EVENT.NOTIFICATION, describe(msg.data));
  });

  // -- background jobs -------------------------------------------------------------------------

  let currentJob = null;
  const jobStates = new Map(); // job_id -> the last progress or done event seen

  /** A job's result for people: {"steps": 4, "attempt": 1} -> "steps: 4, attempt: 1". */
  function describeResult(result) {
    if (result === null || result === undefined) return "no result";
    if (typeof result !== "object" || Array.isArray(result)) return describe(result);
    const fields = Object.entries(result).map(([key, value]) =>
      key.replaceAll("_", " ") + ": " + describe(value));
    return fields.length ? fields.join(", ") : "no result";
  }

  function showJob(jobId) {
    const state = jobStates.get(jobId);
    if (jobId !== currentJob || !state) return;
    const percent = state.done ? 100 : Math.round(state.percent);
    byId("job-progress").value = percent;
    byId("job-progress").textContent = percent + "%";
    byId("job-percent").textContent = percent + "%";
    byId("job-status").textContent = state.done
      ? "Job " + jobId + " done: " + describeResult(state.result)
      : "Job " + jobId + ": step " + state.step + " of " + state.steps + ".";
  }

  onSubmit("job-form", (data) => {
    const steps = Number(data.get("steps"));
    byId("job-progress").value = 0;
    byId("job-percent").textContent = "0%";
    byId("job-status").textContent = "Starting a job of " + steps + " steps…";
    request(socket, EVENT.START_JOB, { steps: steps }, (reply) => {
      currentJob = reply.job_id;
      byId("job-status").textContent = "Job " + currentJob + " started.";
      showJob(currentJob); // its first events may have arrived before the ack
    }, (reason) => {
      byId("job-status").textContent = "Not started: " + reason;
    });
  });

  socket.on(EVENT.JOB_PROGRESS, (msg) => {
    jobStates.set(msg.job_id, msg);
    showJob(msg.job_id);
    log(EVENT.JOB_PROGRESS, msg.job_id + ": " + msg.percent + "%");
  });

  socket.on(EVENT.JOB_DONE, (msg) => {
    jobStates.set(msg.job_id, { done: true, result: msg.result });
    showJob(msg.job_id);
    log(EVENT.JOB_DONE, msg.job_id + ": " + describeResult(msg.result));
  });

  byId("clear-log-button").addEventListener("click", () => byId("log").replaceChildren());
})();
