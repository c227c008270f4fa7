// The feed page: a vertical, swipeable stack of cards (touch or mouse drag, wheel, arrow keys)
// fed by GET /v1/feed, sending what the viewer does as events, with the why-this sheet.

import { get, post, userPath } from './api.js';
import { session } from './session.js';
import { h, clear, toast } from './dom.js';
import { renderCard, setPressed, drawProgress } from './cards.js';
import { EventSender, ViewTracker } from './events.js';
import { Sheet } from './sheet.js';
import { explainCard, renderExplanation } from './why.js';

const PAGE_SIZE = 10;
const PREFETCH_AHEAD = 3; // fetch the next page when this few cards are left
const WHEEL_STEP = 40; // px of wheel travel that turns a card
const WHEEL_LOCK_MS = 450; // one card per wheel gesture
const DRAG_STEP = 60; // px of drag that turns a card
const FLICK_MS = 250; // a shorter drag of 20 px or more also turns it

const MODE_LABELS = { personalized: 'For you', non_personalized: 'Not personalized', following: 'Following' };

function isTyping(target) {
  return target && (target.closest('input, textarea, select, [contenteditable]') !== null);
}

export class FeedPage {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.cards = [];
    this.index = -1;
    this.loading = null;
    this.generation = 0; // bumped when the stack is rebuilt; late answers of old pages are dropped
    this.visible = false;
    this.wheel = { sum: 0, lockedUntil: 0 };
    this.drag = null;
    this.followed = new Set(); // creator ids this viewer is known to follow
    this.sender = new EventSender({ onError: (err) => toast(`Events not sent: ${err.message}`) });
    this.tracker = new ViewTracker(this.sender);
    this.build();
    this.bind();
    app.bus.addEventListener('settings-changed', () => this.refreshAhead());
    app.bus.addEventListener('feed-reset', () => this.restart());
    app.bus.addEventListener('data-erased', () => this.restart());
  }

  build() {
    this.modeEl = h('span', { id: 'feed-mode', class: 'chip mode' }, '…');
    this.noticesEl = h('div', { id: 'feed-notices', class: 'notices', 'aria-live': 'polite' });
    this.track = h('div', { class: 'feed-track' });
    this.emptyEl = h('p', { class: 'feed-empty', hidden: true });
    this.viewport = h('div', { class: 'feed-viewport', tabindex: '0',
      'aria-label': 'Feed: swipe, scroll or use the arrow keys for the next video' },
    this.track, this.emptyEl);
    // The model version is an operator's figure (the console shows it), not a viewer's.
    this.root.append(h('div', { class: 'feed-head' }, this.modeEl), this.noticesEl, this.viewport);
    this.whySheet = new Sheet(this.root, 'why-sheet', 'Why this video?');
    this.commentSheet = new Sheet(this.root, 'comment-sheet', 'Comment');
    this.hideSheet = new Sheet(this.root, 'hide-sheet', 'Not interested');
    for (const sheet of this.sheets()) sheet.onClose = () => this.viewport.focus({ preventScroll: true });
  }

  sheets() {
    return [this.whySheet, this.commentSheet, this.hideSheet];
  }

  sheetOpen() {
    return this.sheets().some((s) => s.isOpen);
  }

  bind() {
    document.addEventListener('keydown', (e) => {
      if (!this.visible || isTyping(e.target)) return;
      if (e.key === 'Escape') { for (const s of this.sheets()) s.close(); return; }
      if (this.sheetOpen()) return;
      if (['ArrowDown', 'PageDown', 'j'].includes(e.key)) { e.preventDefault(); this.go(this.index + 1); }
      if (['ArrowUp', 'PageUp', 'k'].includes(e.key)) { e.preventDefault(); this.go(this.index - 1); }
    });
    this.viewport.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    this.viewport.addEventListener('pointerdown', (e) => this.onPointerDown(e));
    this.viewport.addEventListener('pointermove', (e) => this.onPointerMove(e));
    this.viewport.addEventListener('pointerup', (e) => this.onPointerUp(e));
    this.viewport.addEventListener('pointercancel', (e) => this.onPointerUp(e, true));
    this.track.addEventListener('click', (e) => {
      const button = e.target.closest('[data-action]');
      const el = e.target.closest('.card');
      if (button && el) this.act(button.dataset.action, this.cards[Number(el.dataset.index)]);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) {
        this.tracker.pause();
        this.sender.flush({ keepalive: true });
      } else if (this.visible) this.tracker.resume();
    });
    window.addEventListener('pagehide', () => {
      this.tracker.leave();
      this.sender.flush({ keepalive: true });
    });
    window.addEventListener('resize', () => this.layout(false));
  }

  // -- page life ---------------------------------------------------------------------------
  show() {
    this.visible = true;
    if (!this.cards.length) this.loadMore();
    const card = this.cards[this.index];
    if (card) {
      if (this.tracker.card !== card) this.tracker.enter(card);
      else this.tracker.resume();
    }
    this.layout(false);
    this.tick();
    this.viewport.focus({ preventScroll: true });
  }

  hide() {
    this.visible = false;
    this.tracker.pause();
    cancelAnimationFrame(this.raf);
    for (const s of this.sheets()) s.close();
  }

  tick() {
    cancelAnimationFrame(this.raf);
    const step = () => {
      if (!this.visible) return;
      const card = this.cards[this.index];
      if (card && this.tracker.card === card) drawProgress(card, this.tracker.elapsed());
      this.raf = requestAnimationFrame(step);
    };
    this.raf = requestAnimationFrame(step);
  }

  // A new stack from scratch, without sending anything for the card on screen: used after the
  // viewer erased their data or reset their interests, which the old visit predates.
  restart() {
    this.generation += 1;
    this.tracker.card = null;
    this.sender.queue = [];
    this.followed.clear();
    this.cards = [];
    this.index = -1;
    clear(this.track);
    clear(this.noticesEl);
    this.layout(false);
    if (this.visible) this.loadMore();
  }

  // Before the viewer's data is erased: the visit on screen is dropped unsent, and events
  // already on their way are let through first, so none lands after the erasure.
  async settle() {
    this.tracker.card = null;
    this.sender.queue = [];
    if (this.sender.sending) await this.sender.sending.catch(() => {});
  }

  // Settings changed: keep the card on screen, replace the ones not shown yet.
  refreshAhead() {
    this.generation += 1;
    for (const card of this.cards.splice(this.index + 1)) card.el.remove();
    this.loadMore();
  }

  // -- loading -----------------------------------------------------------------------------
  // One page request at a time per stack; a rebuilt stack does not wait for the old one's.
  loadMore() {
    if (this.loading && this.loading.generation === this.generation) return this.loading.promise;
    const generation = this.generation;
    const promise = this.fetchPage(generation).finally(() => {
      if (this.loading && this.loading.promise === promise) this.loading = null;
    });
    this.loading = { generation, promise };
    return promise;
  }

  async fetchPage(generation) {
    try {
      const feed = await get('/v1/feed', { query: {
        user_id: session.userId, n: PAGE_SIZE, device: 'web', source: 'feed', session_id: this.sender.sessionId,
      } });
      const ids = feed.items.map((i) => i.item_id);
      const records = new Map();
      if (ids.length) {
        const found = await get('/v1/items', { query: { ids: ids.join(',') } });
        for (const item of found.items) records.set(item.item_id, item);
      }
      if (generation !== this.generation) return; // the stack was rebuilt meanwhile
      this.showHead(feed);
      feed.items.forEach((fi, position) => {
        const item = records.get(fi.item_id);
        if (!item) return;
        const card = { itemId: fi.item_id, item, requestId: feed.request_id, position, source: fi.source,
          modelVersion: feed.model_version,
          reasons: fi.reasons || [], score: fi.score, index: this.cards.length };
        this.cards.push(card);
        this.track.append(renderCard(card));
        card.el.dataset.index = String(card.index);
        // The following source only proposes creators the viewer follows.
        if (fi.source === 'following') this.followed.add(item.creator_id);
        if (this.followed.has(item.creator_id)) {
          card.followed = true;
          setPressed(card, 'follow', true);
        }
      });
      this.emptyEl.hidden = this.cards.length > 0;
      this.emptyEl.textContent = 'Nothing new to show right now. Check back soon.';
      if (this.index < 0 && this.cards.length && this.visible) this.go(0);
    } catch (err) {
      this.emptyEl.hidden = this.cards.length > 0;
      this.emptyEl.textContent = `The feed could not load: ${err.explanation || err.message}`;
      if (err.status === 401) this.app.signedOut(err);
      toast(`Feed: ${err.explanation || err.message}`);
    }
  }

  showHead(feed) {
    this.modeEl.dataset.mode = feed.mode;
    this.modeEl.textContent = MODE_LABELS[feed.mode] || feed.mode;
    clear(this.noticesEl);
    for (const notice of feed.notices || []) {
      this.noticesEl.append(h('div', { class: 'notice', dataset: { code: notice.code } },
        h('span', { text: notice.text }),
        h('button', { type: 'button', class: 'btn btn-small', onclick: (e) => e.target.closest('.notice').remove() }, 'OK')));
    }
  }

  // -- moving through the stack ------------------------------------------------------------
  go(i) {
    if (i < 0 || i === this.index) return;
    if (i >= this.cards.length) {
      this.loadMore();
      return;
    }
    this.tracker.leave();
    const previous = this.cards[this.index];
    if (previous) previous.el.classList.remove('active');
    this.index = i;
    const card = this.cards[i];
    card.el.classList.add('active');
    this.layout();
    if (this.visible) this.tracker.enter(card);
    if (this.cards.length - i <= PREFETCH_AHEAD) this.loadMore();
  }

  layout(animate = true, offset = 0) {
    const height = this.viewport.clientHeight;
    this.track.classList.toggle('instant', !animate);
    this.track.style.transform = `translateY(${-Math.max(0, this.index) * height + offset}px)`;
  }

  onWheel(e) {
    e.preventDefault();
    if (this.sheetOpen()) return;
    const now = performance.now();
    if (now < this.wheel.lockedUntil) return;
    this.wheel.sum += e.deltaY;
    if (Math.abs(this.wheel.sum) >= WHEEL_STEP) {
      this.go(this.index + Math.sign(this.wheel.sum));
      this.wheel = { sum: 0, lockedUntil: now + WHEEL_LOCK_MS };
    }
  }

  onPointerDown(e) {
    if (e.pointerType === 'mouse' && e.button !== 0) return;
    if (e.target.closest('button, a, input, textarea')) return;
    this.drag = { id: e.pointerId, y0: e.clientY, t0: performance.now(), dy: 0 };
    this.viewport.setPointerCapture(e.pointerId);
  }

  onPointerMove(e) {
    if (!this.drag || e.pointerId !== this.drag.id) return;
    this.drag.dy = e.clientY - this.drag.y0;
    this.layout(false, this.drag.dy);
  }

  onPointerUp(e, cancelled = false) {
    if (!this.drag || e.pointerId !== this.drag.id) return;
    const { dy, t0 } = this.drag;
    this.drag = null;
    const flick = Math.abs(dy) >= 20 && performance.now() - t0 < FLICK_MS;
    if (!cancelled && (dy <= -DRAG_STEP || (flick && dy < 0))) this.go(this.index + 1);
    else if (!cancelled && (dy >= DRAG_STEP || (flick && dy > 0)) && this.index > 0) this.go(this.index - 1);
    else this.layout();
  }

  // -- what the viewer does with a card ----------------------------------------------------
  act(action, card) {
    if (!card) return;
    if (card.index !== this.index) this.go(card.index);
    if (action === 'like') {
      card.liked = !card.liked;
      setPressed(card, 'like', card.liked);
      this.sender.record(card.liked ? 'like' : 'unlike', card);
    } else if (action === 'follow') {
      const following = !card.followed;
      if (following) this.followed.add(card.item.creator_id);
      else this.followed.delete(card.item.creator_id);
      for (const other of this.cards) {
        if (other.item.creator_id === card.item.creator_id) {
          other.followed = following;
          setPressed(other, 'follow', following);
        }
      }
      this.sender.record(following ? 'follow' : 'unfollow', card);
      toast(following ? `Following @${card.item.creator_id}` : `Unfollowed @${card.item.creator_id}`);
    } else if (action === 'share') {
      this.sender.record('share', card);
      const link = `${window.location.origin}/app/#/video/${encodeURIComponent(card.itemId)}`;
      if (navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {});
      toast('Shared: link copied');
    } else if (action === 'comment') this.openComment(card);
    else if (action === 'not-interested') this.openHide(card);
    else if (action === 'why') this.openWhy(card);
  }

  async openWhy(card) {
    this.whySheet.open(h('p', { class: 'muted', text: 'Asking the feed pipeline…' }), 'Why this video?');
    try {
      const explanation = await explainCard(card);
      if (this.whySheet.isOpen) this.whySheet.open(renderExplanation(explanation, card));
    } catch (err) {
      this.whySheet.open(h('p', { class: 'error', text: `No explanation: ${err.explanation || err.message}` }));
    }
  }

  openComment(card) {
    const text = h('textarea', { id: 'comment-text', rows: '3', maxlength: '300', placeholder: 'Add a comment…' });
    const send = () => {
      this.sender.record('comment', card);
      this.commentSheet.close();
      toast('Comment posted');
    };
    this.commentSheet.open(h('form', { class: 'comment-form', onsubmit: (e) => { e.preventDefault(); send(); } },
      text,
      h('p', { class: 'muted small', text: 'ReelRank records that you commented on this video, not what you wrote.' }),
      h('button', { type: 'submit', class: 'btn btn-primary', id: 'comment-send' }, 'Post')));
  }

  openHide(card) {
    const { item } = card;
    const choice = (scope, label) => h('button', { type: 'button', class: 'btn hide-choice', dataset: { scope },
      onclick: () => this.notInterested(card, scope) }, label);
    this.hideSheet.open(h('div', { class: 'hide-choices' },
      h('p', { class: 'muted', text: 'Show me less of:' }),
      choice('video', 'This video'),
      choice('creator', `Videos by @${item.creator_id}`),
      item.sound_id ? choice('sound', `Videos with sound ${item.sound_id}`) : null,
      h('p', { class: 'muted small', text: 'Creators and sounds you hide are listed under Me, where you can show them again.' })));
  }

  async notInterested(card, scope) {
    this.hideSheet.close();
    try {
      await post(userPath('/not_interested'), { item_id: card.itemId, scope });
    } catch (err) {
      if (err.status !== 404 && err.status !== 405) {
        toast(`Not saved: ${err.explanation || err.message}`);
        return;
      }
      this.sender.record('not_interested', card); // a server without the endpoint: the event alone
    }
    const hides = (other) => other.itemId === card.itemId
      || (scope === 'creator' && other.item.creator_id === card.item.creator_id)
      || (scope === 'sound' && other.item.sound_id && other.item.sound_id === card.item.sound_id);
    // Cards queued behind this one that the choice rules out go; the next page is asked anew.
    const ahead = this.cards.splice(this.index + 1);
    for (const other of ahead) {
      if (hides(other)) other.el.remove();
      else {
        other.index = this.cards.length;
        other.el.dataset.index = String(other.index);
        this.cards.push(other);
      }
    }
    card.el.classList.add('hidden-by-viewer');
    toast(scope === 'video' ? 'Got it: less like this' : `Got it: no more ${scope === 'creator' ? `from @${card.item.creator_id}` : 'with this sound'}`);
    if (this.index + 1 < this.cards.length) this.go(this.index + 1);
    else this.loadMore().then(() => this.go(this.index + 1));
  }
}
