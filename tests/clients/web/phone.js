'use strict';
// A minimal JsSIP softphone for people and for tests/clients/test_browser.py.
// The query string pre-fills the form (server, domain, user, password, target);
// auto=1 registers at once and answers incoming calls; media=PREFIX offers only
// ICE candidates on that address prefix (the tests keep media on loopback).
const params = new URLSearchParams(location.search);
const field = (id) => document.getElementById(id);
for (const id of ['server', 'domain', 'user', 'password', 'target']) {
  if (params.has(id)) field(id).value = params.get(id);
}
const auto = params.get('auto') === '1';
const mediaPrefix = params.get('media');
const rtc = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

// what the tests read: registration and call states, and a timeline
const phone = window.phone = {
  registration: 'unregistered', call: 'idle', connects: 0, events: [], ua: null, session: null,
  async bytesReceived() {
    const pc = phone.session && phone.session.connection;
    if (!pc) return 0;
    let bytes = 0;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') bytes += r.bytesReceived || 0; });
    return bytes;
  },
};

function note(what) {
  const line = `${new Date().toISOString().slice(11, 23)} ${what}`;
  phone.events.push(line);
  field('log').textContent += line + '\n';
  field('status').textContent = `${phone.registration} · call ${phone.call}`;
}

function onlyPrefix(sdp) {
  return sdp.split('\r\n')
    .filter((l) => !l.startsWith('a=candidate') || l.split(' ')[4].startsWith(mediaPrefix))
    .join('\r\n');
}

function watch(session) {
  phone.session = session;
  session.on('sdp', (e) => { if (mediaPrefix && e.originator === 'local') e.sdp = onlyPrefix(e.sdp); });
  const play = (pc) => pc.addEventListener('track', (ev) => { field('remote').srcObject = ev.streams[0]; });
  if (session.connection) play(session.connection); // an outgoing call made it already
  session.on('peerconnection', (e) => play(e.peerconnection));
  session.on('progress', () => { phone.call = 'ringing'; note('ringing'); });
  session.on('confirmed', () => { phone.call = 'confirmed'; note('confirmed'); });
  session.on('ended', (e) => { phone.call = 'ended'; note(`ended (${e.originator}: ${e.cause})`); });
  session.on('failed', (e) => { phone.call = 'failed'; note(`failed (${e.originator}: ${e.cause})`); });
}

function register() {
  if (phone.ua) return;
  const ua = phone.ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(field('server').value)],
    uri: `sip:${field('user').value}@${field('domain').value}`,
    password: field('password').value,
    register: true,
    register_expires: 300,
    session_timers: false,
  });
  ua.on('connected', () => { phone.connects += 1; note(`connected (#${phone.connects})`); });
  ua.on('disconnected', () => note('disconnected'));
  ua.on('registered', () => { phone.registration = 'registered'; note('registered'); });
  ua.on('unregistered', () => { phone.registration = 'unregistered'; note('unregistered'); });
  ua.on('registrationFailed', (e) => { phone.registration = 'failed'; note(`registration failed: ${e.cause}`); });
  ua.on('newRTCSession', (e) => {
    if (e.originator !== 'remote') return;
    watch(e.session);
    phone.call = 'incoming';
    note(`incoming call from ${e.request.from.uri}`);
    if (auto) e.session.answer(rtc);
    else field('answer').disabled = false;
  });
  ua.start();
}

function call() {
  phone.call = 'calling';
  note(`calling ${field('target').value}`);
  watch(phone.ua.call(`sip:${field('target').value}@${field('domain').value}`, rtc));
}

function hangUp() {
  if (phone.session && !phone.session.isEnded()) phone.session.terminate();
}

field('register').onclick = register;
field('call').onclick = call;
field('answer').onclick = () => { field('answer').disabled = true; phone.session.answer(rtc); };
field('hangup').onclick = hangUp;
if (auto) register();
