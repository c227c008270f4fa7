// What the feed page tells the server: one event per thing the viewer did, sent in order.
//
// View rules, per visit of a card (they match what the simulator's viewers send):
// - an `impression` the first time a card is on screen;
// - when the card leaves the screen, a `skip` if it stayed less than SKIP_MS (or under 30% of a
//   short video), else a `play`, both with `watch_ms` = the real time the card was on screen
//   while the page was visible;
// - a `play` longer than the video means it looped: a `rewatch` carries the looped part;
// - coming back to a card already viewed and staying a while is a `rewatch` too.
//
// Events go out with the viewer's own token, which may post events for that viewer and no one
// else: the page never needs a token that writes for every viewer.

import { post, newId } from './api.js';
import { session } from './session.js';

export const SKIP_MS = 2000;
const REVISIT_MIN_MS = 1000;

export class EventSender {
  constructor({ onError } = {}) {
    this.queue = [];
    this.sending = null;
    this.sent = 0;
    this.onError = onError || (() => {});
    this.sessionId = newId();
    this.warnedNoToken = false;
  }

  // `extra` carries request_id / position / watch_ms.
  record(type, card, extra = {}) {
    const event = {
      event_id: newId(),
      user_id: session.userId,
      item_id: card.itemId,
      ts: Date.now(),
      type,
      context: { device: 'web', source: 'feed', session_id: this.sessionId },
    };
    if (card.requestId) event.request_id = card.requestId;
    if (Number.isInteger(card.position)) event.position = card.position;
    for (const [key, value] of Object.entries(extra)) if (value !== undefined) event[key] = value;
    this.queue.push(event);
    return this.flush();
  }

  get pending() {
    return this.queue.length + (this.sending ? 1 : 0);
  }

  // One request at a time keeps the server's order the viewer's order.
  async flush({ keepalive = false } = {}) {
    if (this.sending) return this.sending;
    if (!session.has('user')) {
      if (!this.warnedNoToken) this.onError(new Error('no user token: this page cannot send events'));
      this.warnedNoToken = true;
      this.queue = [];
      return null;
    }
    this.sending = (async () => {
      while (this.queue.length) {
        const batch = this.queue.splice(0, 100);
        try {
          await post('/v1/events', { events: batch }, { as: 'user', keepalive });
          this.sent += batch.length;
        } catch (err) {
          // Event ids make a retry safe; a refused batch (4xx) would be refused again.
          if (!err.status || err.status >= 500) this.queue.unshift(...batch);
          this.onError(err);
          break;
        }
      }
    })();
    try {
      await this.sending;
    } finally {
      this.sending = null;
    }
    return null;
  }
}

// Times how long each card is on screen and turns visits into view events.
export class ViewTracker {
  constructor(sender) {
    this.sender = sender;
    this.card = null;
    this.started = null; // performance.now() when the current stretch on screen began
    this.dwell = 0; // ms on screen in this visit before the current stretch
  }

  enter(card) {
    this.card = card;
    this.dwell = 0;
    this.started = performance.now();
    if (!card.impressionSent) {
      card.impressionSent = true;
      this.sender.record('impression', card);
    }
  }

  // The page was hidden or another page of the app opened: the clock stops, the visit goes on.
  pause() {
    if (this.card && this.started !== null) {
      this.dwell += performance.now() - this.started;
      this.started = null;
    }
  }

  resume() {
    if (this.card && this.started === null) this.started = performance.now();
  }

  // Time on screen in the current visit, so far.
  elapsed() {
    if (!this.card) return 0;
    return this.dwell + (this.started === null ? 0 : performance.now() - this.started);
  }

  leave() {
    const card = this.card;
    if (!card) return;
    const watched = Math.round(this.elapsed());
    this.card = null;
    this.started = null;
    const duration = card.item.duration_ms;
    if (!card.viewed) {
      card.viewed = true;
      const skipped = watched < Math.min(SKIP_MS, 0.3 * duration);
      card.lastView = skipped ? 'skip' : 'play';
      this.sender.record(card.lastView, card, { watch_ms: watched });
      if (!skipped && watched > duration) {
        this.sender.record('rewatch', card, { watch_ms: watched - duration });
      }
    } else if (watched >= REVISIT_MIN_MS) {
      this.sender.record('rewatch', card, { watch_ms: watched });
    }
  }
}
