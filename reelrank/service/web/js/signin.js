// Signing the page in. On a demo server (`reelrank demo`): pick a synthetic viewer and the
// server mints that viewer's user token (plus service tokens for the other pages). Elsewhere:
// paste a viewer id and the user token the app's backend minted for them; nothing here can mint
// one. A viewer's token reaches their feed, data and own events, so a viewer is never asked for
// a token that writes for everyone (ingest); serve and admin are for operators' pages only.

import { get, post, ApiError } from './api.js';
import { session } from './session.js';
import { h } from './dom.js';

export function showSignIn(status) {
  return new Promise((resolve) => {
    const done = (userId, tokens, demo) => {
      session.start({ userId, tokens, demo });
      overlay.remove();
      resolve();
    };
    const errorEl = h('p', { class: 'error', id: 'signin-error', 'aria-live': 'assertive' });
    const userInput = h('input', { id: 'signin-user', type: 'text', maxlength: '128', required: true,
      autocomplete: 'username', 'aria-label': 'Viewer id' });
    const card = h('div', { class: 'signin-card' });
    const overlay = h('div', { class: 'signin-overlay', id: 'signin', role: 'dialog', 'aria-label': 'Sign in' }, card);
    document.body.append(overlay);

    if (status.demo) {
      const list = h('div', { class: 'viewer-list', id: 'viewer-list' }, h('p', { class: 'muted', text: 'Loading viewers…' }));
      const demoSignIn = async (userId) => {
        errorEl.textContent = '';
        try {
          const answer = await post('/v1/demo/sign-in', { user_id: userId }, { as: null });
          done(answer.user_id, answer.tokens || {}, true);
        } catch (err) {
          errorEl.textContent = err instanceof ApiError ? err.explanation : String(err);
        }
      };
      userInput.placeholder = 'any viewer id';
      card.append(
        h('h1', {}, 'ReelRank ', h('span', { class: 'chip demo', text: 'demo' })),
        h('p', { class: 'demo-warning', id: 'demo-notice' },
          h('b', { text: 'Demo sign-in. ' }),
          'This server runs in demo mode: pick one of its synthetic viewers and the page acts as them, with a user token ',
          'minted for them and service tokens for the studio and console. A real app signs its viewers in itself.'),
        h('h2', { text: 'Sign in as' }), list,
        h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); if (userInput.value.trim()) demoSignIn(userInput.value.trim()); } },
          userInput, h('button', { type: 'submit', class: 'btn btn-primary', id: 'signin-submit' }, 'Sign in')),
        h('button', { type: 'button', class: 'btn', id: 'signin-new',
          onclick: () => demoSignIn(`web-${Math.random().toString(36).slice(2, 8)}`) }, 'A new viewer (cold start)'),
        errorEl);
      get('/v1/demo/directory', { as: null }).then((directory) => {
        list.replaceChildren(...directory.viewers.slice(0, 12).map((v) => h('button', {
          type: 'button', class: 'viewer-choice', dataset: { userId: v.user_id }, onclick: () => demoSignIn(v.user_id) },
        h('b', { text: v.user_id }),
        h('small', { text: `${v.events} events${v.top_hashtags.length ? ' · ' : ''}${v.top_hashtags.map((t) => `#${t}`).join(' ')}` }))));
      }).catch((err) => { list.replaceChildren(h('p', { class: 'muted', text: `No viewer list: ${err.message}` })); });
      return;
    }

    const tokenInput = (id, label, required = false) => h('label', { class: 'field' }, h('span', { text: label }),
      h('input', { id, type: 'password', autocomplete: 'off', required: required || null }));
    const authOn = status.auth !== false;
    card.append(
      h('h1', { text: 'ReelRank' }),
      h('p', { class: 'muted', text: authOn
        ? 'Demo sign-in is off on this server. Enter a viewer id and the user token your app\'s backend minted for that viewer (POST /v1/admin/users/{id}/token): it reaches that viewer\'s feed, data and events, and nothing else. Operators may add a serve token for the creator studio and an admin token for the console.'
        : 'This server runs without authentication (local trials only): a viewer id is enough.' }),
      h('form', { class: 'stack-form', onsubmit: async (e) => {
        e.preventDefault();
        const form = e.target;
        const tokens = authOn ? {
          user: form.querySelector('#signin-token').value.trim() || null,
          serve: form.querySelector('#signin-serve').value.trim() || null,
          admin: form.querySelector('#signin-admin').value.trim() || null,
        } : {};
        const userId = userInput.value.trim();
        session.start({ userId, tokens, demo: false });
        try {
          await get(`/v1/users/${encodeURIComponent(userId)}/settings`);
          done(userId, tokens, false);
        } catch (err) {
          session.clear();
          errorEl.textContent = `These credentials do not reach ${userId}'s data: ${err.message}`;
        }
      } },
      h('label', { class: 'field' }, h('span', { text: 'Viewer id' }), userInput),
      authOn ? [tokenInput('signin-token', 'User token', true),
        tokenInput('signin-serve', 'Serve token (creator studio, operators only)'),
        tokenInput('signin-admin', 'Admin token (console, operators only)')] : null,
      h('button', { type: 'submit', class: 'btn btn-primary', id: 'signin-submit' }, 'Sign in')),
      errorEl);
  });
}
