// Who this page acts for: a viewer id and the bearer tokens the pages use.
// Kept in sessionStorage (one browser tab), never in a cookie: the API reads bearer tokens only.

const KEY = 'reelrank.session.v1';

export const session = {
  userId: null,
  demo: false,
  tokens: {},

  load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) || 'null');
      if (saved && typeof saved.userId === 'string') Object.assign(this, saved);
    } catch (err) {
      console.warn('ignoring an unreadable saved session', err);
    }
    return this;
  },

  start({ userId, demo, tokens }) {
    this.userId = userId;
    this.demo = Boolean(demo);
    this.tokens = { ...(tokens || {}) };
    sessionStorage.setItem(KEY, JSON.stringify({ userId, demo: this.demo, tokens: this.tokens }));
  },

  clear() {
    this.userId = null;
    this.tokens = {};
    sessionStorage.removeItem(KEY);
  },

  get signedIn() {
    return Boolean(this.userId);
  },

  // The token for a kind of call: 'user' (the viewer's own paths, feed, explain and events),
  // 'serve' (creator insights) or 'admin' (console). An admin token reaches all.
  token(kind) {
    if (!kind) return null;
    return this.tokens[kind] || this.tokens.admin || null;
  },

  has(kind) {
    return Boolean(this.token(kind)) || this.authOff;
  },

  authOff: false,
};
