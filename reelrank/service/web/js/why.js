// "Why this video?": GET /v1/explain for the viewer and the card, told in plain words: the
// reasons, where the video came from, anything that filtered or moved it, and at most one
// sentence about what the ranker expects.
//
// The ranker's per-task outputs are not shown as percentages: they are scores trained to order
// videos, not rates a person can check against their own experience ("share 21%" reads as a
// promise). Only the long-view head is turned into words, and only when it clears one half,
// where "likely" is a fair reading of it. The model version is for operators (the console),
// not for viewers.

import { get } from './api.js';
import { session } from './session.js';
import { h, humanize } from './dom.js';
import { sourceLabel } from './cards.js';

// A long view (types.LONG_VIEW_MS) is 18 s of watching, or the whole video when it is shorter.
const LONG_VIEW_MS = 18_000;
const LIKELY = 0.5;

export async function explainCard(card) {
  return get('/v1/explain', { query: { user_id: session.userId, item_id: card.itemId } });
}

// The one sentence about the ranker's expectation, or null.
export function expectation(predictions, durationMs) {
  const p = predictions && typeof predictions.long_view === 'number' ? predictions.long_view : null;
  if (p === null || p < LIKELY) return null;
  return typeof durationMs === 'number' && durationMs > LONG_VIEW_MS
    ? 'You are likely to watch at least 18 seconds of it.'
    : 'You are likely to watch it to the end.';
}

export function renderExplanation(x, card) {
  const reasons = Array.isArray(x.reasons) ? x.reasons : [];
  const sources = Array.isArray(x.sources) ? x.sources : [];
  const filters = Array.isArray(x.filters) ? x.filters : [];
  const rerank = Array.isArray(x.rerank) ? x.rerank : [];
  const expected = expectation(x.predictions, card.item ? card.item.duration_ms : undefined);
  return h('div', { class: 'why' },
    h('h3', { text: 'Shown because' }),
    reasons.length
      ? h('ul', { class: 'why-reasons' }, reasons.map((r) => h('li', { dataset: { code: r.code || '' }, text: r.text || r.code })))
      : h('p', { class: 'muted', text: 'No specific signal: this video filled the feed.' }),
    expected ? h('p', { class: 'why-expectation', text: expected }) : null,
    h('h3', { text: 'Found by' }),
    h('p', { class: 'why-source' },
      sources.length
        ? sources.map((s) => h('span', { class: 'chip', text: sourceLabel(s.source) }))
        : h('span', { class: 'chip', text: sourceLabel(x.source || card.source) })),
    filters.length ? [
      h('h3', { text: 'Filters that touched it' }),
      h('ul', { class: 'why-filters' }, filters.map((f) => h('li', { text: `${f.filter}: ${f.reason}` }))),
    ] : null,
    rerank.length ? [
      h('h3', { text: 'Moved by the re-ranker' }),
      h('ul', { class: 'why-rerank' }, rerank.map((note) => h('li', { text: String(note) }))),
    ] : null,
    h('dl', { class: 'why-facts' },
      fact('position', x.position ? `#${x.position} of its page` : '–'),
      fact('feed mode', x.mode ? humanize(x.mode) : '–')),
    h('p', { class: 'muted small' },
      'Read from the feed pipeline\'s own trace of the request that showed this video. ',
      'Change what shapes your feed under Me.'));
}

function fact(label, value) {
  return [h('dt', { text: label }), h('dd', { text: value })];
}
