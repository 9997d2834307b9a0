// ccctl: the join page plays from a Janus edge when ccctl names one (served at /edge.js).
//
// Included by the join page before its own script, with one line. It wraps window.fetch and
// takes over the page's WHEP offer (POST /whep/SITE) only while ccctl names an edge for this
// site: it asks GET /api/sites/SITE/edge (the page's own token); when that names an edge, it
// plays from it over Janus's plain HTTP protocol (session, attach janus.plugin.streaming,
// watch with the pin, long-poll for the offer, answer, start), into the page's <video id=
// "program">, tells ccctl it watches (with its Janus session and handle, which ccctl checks
// against the edge's admin API and uses to switch tiers on this same connection), and keeps
// the page's WHEP request pending. When the edge hangs up, stops answering or sends no media
// for 5 s, it tells ccctl it left and asks again: another edge, or none, and then the page's
// WHEP offer goes to ccctl as if nothing had happened. Janus 1.1.2 has no WHEP, hence this.
// While an edge plays, the page's `pc` is the edge's peer connection, so that its own
// statistics (window.ccctl.videoFrames, audioPackets, the quality line) read the edge's.
"use strict";
(() => {
  const realFetch = window.fetch.bind(window);
  const MEDIA_TIMEOUT_MS = 5000, ANSWER_TIMEOUT_MS = 30000, ASKS = 1000;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let current = null;   // { site, auth, janus, session } of the edge session playing now

  function status() {
    window.ccctl = window.ccctl || {};
    return window.ccctl;
  }

  function header(init, name) {
    const h = init && init.headers;
    if (!h) return null;
    if (h instanceof Headers) return h.get(name);
    const key = Object.keys(h).find((k) => k.toLowerCase() === name.toLowerCase());
    return key ? h[key] : null;
  }

  function whepSite(input, init) {
    if (!init || String(init.method || "GET").toUpperCase() !== "POST") return null;
    const url = new URL(typeof input === "string" ? input : input.url, location.href);
    const m = url.origin === location.origin && url.pathname.match(/^\/whep\/([^/]+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function show(text, ok) {   // the page's own state line, when it has one
    try { setState(text, ok); } catch (err) { /* a page without it */ }  // eslint-disable-line no-undef
  }

  function edgeRoute(site) { return `/api/sites/${encodeURIComponent(site)}/edge`; }

  async function ask(site, auth) {
    try {
      const res = await realFetch(edgeRoute(site), { headers: auth, cache: "no-store" });
      if (res.status !== 200) return null;   // an older ccctl, or no such site: WHEP says what is wrong
      const where = await res.json();
      return where && where.edge ? where : null;
    } catch (err) { return null; }
  }

  async function report(site, auth, body) {
    try {
      const res = await realFetch(edgeRoute(site), { method: "POST", keepalive: true, body: JSON.stringify(body),
                                                    headers: { ...auth, "Content-Type": "application/json" } });
      return res.status === 204;
    } catch (err) { return false; }
  }

  // One Janus session with one streaming handle, and its long poll.
  function janusSession(url) {
    let tx = 0;
    const waiting = new Map();
    const j = { url: url.replace(/\/+$/, ""), session: 0, handle: 0, closed: false };
    let endWith;
    j.ended = new Promise((resolve) => { endWith = resolve; });
    j.end = (why) => { if (!j.closed) { j.closed = true; endWith(why); } };

    j.post = async (path, body) => {
      const res = await realFetch(j.url + path, { method: "POST", headers: { "Content-Type": "application/json" },
                                                 body: JSON.stringify({ ...body, transaction: body.transaction || `e${++tx}` }) });
      const data = await res.json();
      if (data.janus === "error") throw new Error(`janus: ${(data.error || {}).reason}`);
      return data;
    };

    j.message = async (body, jsep) => {
      const transaction = `m${++tx}`;
      const answer = new Promise((resolve, reject) => {
        waiting.set(transaction, { resolve, reject });
        setTimeout(() => reject(new Error(`janus: no answer to ${body.request}`)), ANSWER_TIMEOUT_MS);
      });
      answer.catch(() => {});   // answered in the POST's reply instead: nobody waits on this one
      try {
        const reply = await j.post(`/${j.session}/${j.handle}`, { janus: "message", body, transaction, ...(jsep ? { jsep } : {}) });
        if (reply.janus === "event") return reply;
        return await answer;
      } finally { waiting.delete(transaction); }
    };

    j.poll = async () => {
      while (!j.closed) {
        let events;
        try {
          const res = await realFetch(`${j.url}/${j.session}?maxev=10&rid=${Date.now()}`, { cache: "no-store" });
          events = await res.json();
        } catch (err) { j.end("the edge stopped answering"); return; }
        for (const ev of Array.isArray(events) ? events : [events]) {
          if (!ev || typeof ev !== "object") continue;
          if (ev.janus === "hangup") j.end(`the edge hung up (${ev.reason || ""})`);
          const data = (ev.plugindata && ev.plugindata.data) || {};
          if (data.result && data.result.switched === "ok") status().edgeSwitches = (status().edgeSwitches || 0) + 1;
          const waiter = waiting.get(String(ev.transaction));
          if (waiter && ev.janus === "event") {
            if (data.error) waiter.reject(new Error(`janus: ${data.error}`));
            else waiter.resolve(ev);
          }
        }
      }
    };

    j.open = async () => {
      j.session = (await j.post("", { janus: "create" })).data.id;
      j.handle = (await j.post(`/${j.session}`, { janus: "attach", plugin: "janus.plugin.streaming" })).data.id;
      j.poll();
    };

    j.close = async () => {
      j.end("closed");
      if (j.session) { try { await j.post(`/${j.session}`, { janus: "destroy" }); } catch (err) { /* gone already */ } }
    };
    return j;
  }

  // Play from the edge ccctl named until that session ends; resolves with why it ended.
  async function play(where, site, auth) {
    const j = janusSession(String(where.url));
    const epc = new RTCPeerConnection();
    const video = document.getElementById("program");
    const stream = new MediaStream();
    epc.ontrack = (ev) => { stream.addTrack(ev.track); if (video) video.srcObject = stream; };
    epc.onconnectionstatechange = () => {
      if (epc.connectionState === "failed" || epc.connectionState === "closed") j.end(`connection ${epc.connectionState}`);
    };
    current = { site, auth, janus: j };
    try {
      await j.open();
      const offer = await j.message({ request: "watch", id: where.mount, pin: where.pin });
      if (!offer.jsep) throw new Error("janus: watch gave no offer");
      await epc.setRemoteDescription(offer.jsep);
      await epc.setLocalDescription(await epc.createAnswer());
      await new Promise((resolve) => {   // send the answer with its candidates (no trickle)
        if (epc.iceGatheringState === "complete") return resolve();
        epc.addEventListener("icegatheringstatechange", () => epc.iceGatheringState === "complete" && resolve());
        setTimeout(resolve, 5000);
      });
      await j.message({ request: "start" }, { type: "answer", sdp: epc.localDescription.sdp });
      try { pc = epc; } catch (err) { /* a page without its own `pc`: nothing to share */ }  // eslint-disable-line no-undef
      const s = status();
      s.edge = where.edge;
      let last = -1, since = Date.now(), reported = false;
      while (!j.closed) {   // the media watchdog, and the report once media flows
        const stats = await epc.getStats();
        let packets = 0;
        stats.forEach((r) => { if (r.type === "inbound-rtp") packets += r.packetsReceived || 0; });
        const up = epc.connectionState === "connected";
        if (s.connected !== up) show(`${epc.connectionState} · ${where.edge}`, up);
        s.connected = up;
        if (packets !== last) {
          last = packets; since = Date.now();
          if (!reported && packets > 0 && s.connected) {
            reported = await report(site, auth, { state: "watching", edge: where.edge, session: j.session, handle: j.handle });
            if (!reported) { j.end("ccctl did not take this edge session"); break; }
            s.joins = (s.joins || 0) + 1;
          }
        } else if (Date.now() - since > MEDIA_TIMEOUT_MS) {
          j.end("no media from the edge");
        }
        await Promise.race([j.ended, sleep(1000)]);   // a watchdog's period
      }
      return await j.ended;
    } finally {
      current = null;
      status().edge = null;
      status().connected = false;
      epc.close();
      await j.close();
      await report(site, auth, { state: "left" });
    }
  }

  window.fetch = async function (input, init) {
    const site = whepSite(input, init);
    if (site === null) return realFetch(input, init);
    const auth = { Authorization: header(init, "Authorization") || "" };
    let pagePc = null;
    try { pagePc = pc; } catch (err) { /* no `pc` on this page */ }  // eslint-disable-line no-undef
    for (let attempt = 1; attempt <= ASKS; attempt++) {   // bounded: ccctl stops naming edges, or this ends
      const where = await ask(site, auth);
      if (!where) break;
      const started = Date.now();
      try {
        status().lastError = `edge ${where.edge}: ${await play(where, site, auth)}`;
      } catch (err) {
        status().lastError = `edge ${where.edge}: ${err}`;
      }
      try { pc = pagePc; } catch (err) { /* as above */ }  // eslint-disable-line no-undef
      if (Date.now() - started > 30000) attempt = 1;   // it played a while: ask again at once
      await sleep(Math.min(10000, 500 * attempt));
    }
    return realFetch(input, init);   // ccctl itself: the page's own WHEP offer
  };

  window.addEventListener("pagehide", () => {
    if (!current) return;
    const { site, auth, janus } = current;
    realFetch(edgeRoute(site), { method: "POST", keepalive: true, body: JSON.stringify({ state: "left" }),
                                 headers: { ...auth, "Content-Type": "application/json" } });
    if (janus.session) {
      realFetch(`${janus.url}/${janus.session}`, { method: "POST", keepalive: true,
                                                   body: JSON.stringify({ janus: "destroy", transaction: "bye" }) });
    }
  });
})();
