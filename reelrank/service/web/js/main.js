// The app shell: sign-in, the navigation between the four pages, and what pages share.

import { get, post } from './api.js';
import { session } from './session.js';
import { h, append, clear, toast } from './dom.js';
import { showSignIn } from './signin.js';
import { FeedPage } from './feed.js';
import { MePage } from './me.js';
import { StudioPage } from './studio.js';
import { ConsolePage } from './console.js';

const PAGES = {
  feed: { label: 'Feed', Page: FeedPage },
  me: { label: 'Me', Page: MePage },
  studio: { label: 'Studio', Page: StudioPage },
  console: { label: 'Console', Page: ConsolePage },
};

class App {
  constructor() {
    this.bus = new EventTarget(); // settings-changed, feed-reset, data-erased
    this.pages = {};
    this.current = null;
    this.status = { demo: false, auth: true };
  }

  async start() {
    try {
      this.status = await get('/v1/demo', { as: null });
    } catch (err) {
      console.warn('no demo status; assuming a regular server', err);
    }
    session.authOff = this.status.auth === false;
    session.load();
    if (!session.signedIn) await showSignIn(this.status);
    this.renderChrome();
    window.addEventListener('hashchange', () => this.route());
    this.route();
    document.body.dataset.ready = 'true';
  }

  renderChrome() {
    const nav = document.getElementById('nav');
    clear(nav).append(...Object.entries(PAGES).map(([name, { label }]) => h('a', { href: `#/${name}`,
      class: 'nav-link', dataset: { page: name } }, label)));
    append(clear(document.getElementById('who')), [
      h('span', { id: 'who-user', text: session.userId }),
      session.demo ? h('span', { class: 'chip demo', title: 'Signed in through the demo sign-in', text: 'demo' }) : null]);
  }

  route() {
    const wanted = window.location.hash.replace(/^#\/?/, '').split('/')[0];
    const name = PAGES[wanted] ? wanted : 'feed';
    if (this.current && this.current !== name) this.pages[this.current].hide();
    for (const key of Object.keys(PAGES)) {
      document.getElementById(`page-${key}`).hidden = key !== name;
    }
    for (const link of document.querySelectorAll('.nav-link')) {
      if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (!this.pages[name]) this.pages[name] = new PAGES[name].Page(document.getElementById(`page-${name}`), this);
    this.current = name;
    document.body.dataset.page = name;
    this.pages[name].show();
  }

  signOut() {
    if (this.current) this.pages[this.current].hide();
    session.clear();
    window.location.hash = '#/feed';
    window.location.reload();
  }

  signedOut() {
    toast('This sign-in is no longer valid: sign in again');
    setTimeout(() => this.signOut(), 1500);
  }

  async settleFeed() {
    if (this.pages.feed) await this.pages.feed.settle();
  }

  // Erasing a viewer revokes their tokens. A demo page signs the same id in again, which
  // starts a new, empty account; otherwise the viewer signs in anew.
  async renewAfterErase() {
    if (!session.demo) {
      this.signedOut();
      return;
    }
    const answer = await post('/v1/demo/sign-in', { user_id: session.userId }, { as: null });
    session.start({ userId: answer.user_id, tokens: answer.tokens || {}, demo: true });
  }
}

new App().start();
