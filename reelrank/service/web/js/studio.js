// The creator studio: pick a creator, see GET /v1/creators/{id}/insights as charts: who their
// audience is (aggregates only), how recent videos do against similar ones, what to post next.

import { get } from './api.js';
import { h, clear, humanize, formatNumber } from './dom.js';
import { barChart, pairChart } from './charts.js';

const pct = (v) => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`);
const RATE_LABELS = { watch_through: 'watch-through', like_rate: 'likes / view', share_rate: 'shares / view',
  mean_watch_ratio: 'watched share' };

export class StudioPage {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.input = h('input', { id: 'creator-input', type: 'text', list: 'creator-list', placeholder: 'creator id, e.g. c3',
      'aria-label': 'Creator id' });
    this.datalist = h('datalist', { id: 'creator-list' });
    this.picker = h('div', { id: 'creator-picker', class: 'chips' });
    this.out = h('div', { id: 'insights' });
    root.append(
      h('section', { class: 'panel' },
        h('h2', { text: 'Creator studio' }),
        h('p', { class: 'muted', text: 'Your audience in aggregate (never single viewers), how your videos do against similar ones, and what to post next.' }),
        h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); this.open(this.input.value.trim()); } },
          this.input, this.datalist, h('button', { type: 'submit', class: 'btn btn-primary', id: 'creator-open' }, 'Open')),
        this.picker),
      this.out);
  }

  async show() {
    if (this.listed) return;
    this.listed = true;
    try {
      const directory = await get('/v1/demo/directory', { as: 'serve' });
      for (const c of directory.creators.slice(0, 40)) this.datalist.append(h('option', { value: c.creator_id }, `${c.videos} videos`));
      for (const c of directory.creators.slice(0, 8)) {
        this.picker.append(h('button', { type: 'button', class: 'chip chip-btn', dataset: { creatorId: c.creator_id },
          onclick: () => { this.input.value = c.creator_id; this.open(c.creator_id); } }, `@${c.creator_id}`));
      }
      if (!this.current && directory.creators.length) {
        this.input.value = directory.creators[0].creator_id;
        this.open(this.input.value);
      }
    } catch (err) {
      // Not a demo server: the creator id is typed in.
    }
  }

  hide() {}

  async open(creatorId) {
    if (!creatorId) return;
    this.current = creatorId;
    clear(this.out).append(h('p', { class: 'muted', text: `Loading insights for @${creatorId}…` }));
    try {
      const insights = await get(`/v1/creators/${encodeURIComponent(creatorId)}/insights`, { as: 'serve' });
      if (this.current === creatorId) clear(this.out).append(this.render(insights));
    } catch (err) {
      clear(this.out).append(h('p', { class: 'error', text: `No insights for @${creatorId}: ${err.explanation || err.message}` }));
    }
  }

  render(x) {
    const audience = x.audience || {};
    const recent = Array.isArray(x.recent_videos) ? x.recent_videos : [];
    const next = x.what_to_post_next || {};
    const measured = recent.filter((v) => !v.suppressed);
    return h('div', { class: 'studio', dataset: { creatorId: x.creator_id } },
      h('section', { class: 'panel tiles' },
        tile('creator', `@${x.creator_id}`), tile('videos', formatNumber(x.videos)),
        tile('audience', audience.suppressed ? 'too few' : `${formatNumber(audience.viewers)}+ viewers`),
        tile('measured videos', `${measured.length} of ${recent.length} recent`)),
      h('section', { class: 'panel' },
        h('h3', { text: 'Your audience is into' }),
        this.interests(audience)),
      h('div', { class: 'studio-grid' },
        h('section', { class: 'panel' },
          h('h3', { text: 'What to post next' }),
          next.suppressed ? h('p', { class: 'muted', text: next.reason || 'not enough viewers yet' }) : suggestions(next.items || [])),
        h('section', { class: 'panel' },
          h('h3', { text: 'Recent videos against similar ones' }),
          measured.length
            ? pairChart(measured.slice(0, 6).map((v) => ({ label: v.item_id, mine: v.watch_through,
              theirs: v.similar ? v.similar.watch_through : null })), { format: pct, names: ['watch-through', 'similar videos'] })
            : h('p', { class: 'muted', text: 'No recent video has enough distinct viewers yet to compare; each is listed below with its exploration state.' }))),
      h('section', { class: 'panel' }, h('h3', { text: 'Recent videos' }), videoTable(recent)),
      h('p', { class: 'muted small', text: x.privacy || '' }));
  }

  interests(audience) {
    if (audience.suppressed) return h('p', { class: 'muted', text: audience.reason || 'too few viewers so far' });
    if (!audience.interests) return h('p', { class: 'muted', text: audience.interests_note || 'not enough data' });
    // Viewer communities ("a third of your audience is in fitness + running"); the server
    // leaves out any group under its privacy floor.
    const communities = Array.isArray(audience.communities) ? audience.communities : [];
    return h('div', { class: 'chart-grid' }, Object.entries(audience.interests)
      .filter(([, rows]) => Array.isArray(rows) && rows.length)
      .map(([kind, rows]) => h('figure', { class: 'chart-card' }, h('figcaption', { text: humanize(kind) }),
        barChart(rows.map((r) => ({ label: String(r.value), value: r.share })), { format: pct }))),
    communities.length ? h('figure', { class: 'chart-card' }, h('figcaption', { text: 'Viewer communities' }),
      barChart(communities.map((r) => ({ label: String(r.community), value: r.share })), { format: pct })) : null);
  }
}

function tile(label, value) {
  return h('div', { class: 'tile' }, h('span', { class: 'tile-label', text: label }), h('b', { class: 'tile-value', text: value }));
}

function videoTable(videos) {
  if (!videos.length) return null;
  const rates = Object.keys(RATE_LABELS);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data-table' },
    h('thead', {}, h('tr', {}, h('th', { text: 'video' }), h('th', { text: 'topic' }), h('th', { text: 'viewers' }),
      rates.map((r) => h('th', { text: RATE_LABELS[r] })), h('th', { text: 'exploration' }))),
    h('tbody', {}, videos.map((v) => h('tr', {},
      h('td', { text: v.item_id }), h('td', { text: `${v.topic || '–'} · ${v.length || ''}` }),
      h('td', { text: v.suppressed ? 'too few' : formatNumber(v.viewers) }),
      rates.map((r) => h('td', {}, v.suppressed ? '–' : pct(v[r]),
        v.vs_similar && typeof v.vs_similar[r] === 'number'
          ? h('small', { class: v.vs_similar[r] >= 0 ? 'up' : 'down',
            text: ` ${v.vs_similar[r] >= 0 ? '+' : ''}${Math.round(v.vs_similar[r] * 100)}%` }) : null)),
      h('td', { text: v.exploration ? humanize(v.exploration.state) : '–' }))))));
}

function suggestions(items) {
  if (!items.length) return h('p', { class: 'muted', text: 'No gap found: you already post what your audience asks for.' });
  const top = [...items].sort((a, b) => (b.opportunity || 0) - (a.opportunity || 0)).slice(0, 8);
  return h('div', {},
    // opportunity = the audience's share of interest / the creator's share of videos: a ratio.
    barChart(top.map((s) => ({ label: `${s.kind}: ${s.value}`, value: s.opportunity || 0 })), { format: (v) => `${formatNumber(v, 1)}×` }),
    h('p', { class: 'muted small chart-note', text: 'Bars: how many times more of your audience\'s interest goes to it than of your videos.' }),
    h('ul', { class: 'suggestions' }, top.map((s) => h('li', {},
      h('b', { text: `${humanize(s.kind)} “${s.value}”` }),
      ` — ${pct(s.demand_share)} of your audience's interest, ${pct(s.supply_share)} of your videos`,
      s.evidence ? h('small', { class: 'muted', text: ` (${typeof s.evidence === 'string' ? s.evidence : JSON.stringify(s.evidence)})` }) : null))));
}
