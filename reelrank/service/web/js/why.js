// "Why this video?": GET /v1/explain for the viewer and the card, told in plain words, with the
// model's predictions drawn as bars and anything that filtered or moved the video.

import { get } from './api.js';
import { session } from './session.js';
import { h, formatNumber, humanize } from './dom.js';
import { barChart } from './charts.js';
import { sourceLabel } from './cards.js';

const TASK_LABELS = {
  long_view: 'watch it for long', watch_time: 'share of it watched', like: 'like it',
  share: 'share it', comment: 'comment', follow: 'follow the creator', negative: 'react negatively',
};

export async function explainCard(card) {
  return get('/v1/explain', { query: { user_id: session.userId, item_id: card.itemId } });
}

export function renderExplanation(x, card) {
  const reasons = Array.isArray(x.reasons) ? x.reasons : [];
  const sources = Array.isArray(x.sources) ? x.sources : [];
  const predictions = x.predictions && typeof x.predictions === 'object' ? x.predictions : {};
  const filters = Array.isArray(x.filters) ? x.filters : [];
  const rerank = Array.isArray(x.rerank) ? x.rerank : [];
  const rows = Object.entries(predictions)
    .filter(([, v]) => typeof v === 'number')
    .map(([task, v]) => ({ label: TASK_LABELS[task] || humanize(task), value: v }));
  return h('div', { class: 'why' },
    h('h3', { text: 'Shown because' }),
    reasons.length
      ? h('ul', { class: 'why-reasons' }, reasons.map((r) => h('li', { dataset: { code: r.code || '' }, text: r.text || r.code })))
      : h('p', { class: 'muted', text: 'No specific signal: this video filled the feed.' }),
    h('h3', { text: 'Found by' }),
    h('p', { class: 'why-source' },
      sources.length
        ? sources.map((s) => h('span', { class: 'chip', text: sourceLabel(s.source) }))
        : h('span', { class: 'chip', text: sourceLabel(x.source || card.source) })),
    rows.length ? [
      h('h3', { text: 'What the model expects you to do' }),
      barChart(rows, { max: 1, format: (v) => `${Math.round(v * 100)}%`, className: 'why-predictions' }),
    ] : null,
    filters.length ? [
      h('h3', { text: 'Filters that touched it' }),
      h('ul', { class: 'why-filters' }, filters.map((f) => h('li', { text: `${f.filter}: ${f.reason}` }))),
    ] : null,
    rerank.length ? [
      h('h3', { text: 'Moved by the re-ranker' }),
      h('ul', { class: 'why-rerank' }, rerank.map((note) => h('li', { text: String(note) }))),
    ] : null,
    h('dl', { class: 'why-facts' },
      fact('score', x.score === null || x.score === undefined ? '–' : formatNumber(x.score, 3)),
      fact('position', x.position ? `#${x.position} of its page` : '–'),
      fact('feed mode', x.mode ? humanize(x.mode) : '–'),
      fact('model', x.model_version || card.modelVersion || '–')),
    h('p', { class: 'muted small' },
      'Read from the feed pipeline\'s own trace of the request that showed this video. ',
      'Change what shapes your feed under Me.'));
}

function fact(label, value) {
  return [h('dt', { text: label }), h('dd', { text: value })];
}
