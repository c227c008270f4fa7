// One video of the feed drawn as a card: a coloured stage with the topic, the caption,
// hashtags, creator and sound, the action column, and a progress bar that plays for the
// video's duration (and loops, as short videos do).

import { h, icon, hueOf, formatDuration } from './dom.js';

const SOURCE_LABELS = {
  retrieval: 'picked for you',
  co_engagement: 'viewers like you',
  following: 'you follow',
  trending: 'trending',
  fresh: 'new',
  explore: 'exploring',
  popular_region: 'popular near you',
};

export function sourceLabel(source) {
  return SOURCE_LABELS[source] || String(source || '').replace(/_/g, ' ');
}

// The caption without the hashtags it ends with (they are drawn as chips).
function captionText(item) {
  const tags = new Set((item.hashtags || []).map((t) => `#${t}`.toLowerCase()));
  return String(item.caption || '')
    .split(/\s+/)
    .filter((word) => word && !tags.has(word.toLowerCase()))
    .join(' ');
}

// The topic the feed reads for the video (learned, named from its words, when the server has
// learned topics), else its topic attribute or first hashtag.
function topicOf(item) {
  if (item.topic && item.topic.name) return item.topic.name;
  const attrs = item.attributes || {};
  return attrs.topic || (item.hashtags || [])[0] || 'video';
}

// As the server words it ("cooking · recipe · pasta", "#cooking"), else as a hashtag.
function topicChip(item) {
  return item.topic && item.topic.name ? item.topic.name : `#${topicOf(item)}`;
}

function actionButton(name, label, action, filled = false) {
  return h('button', { type: 'button', class: `action action-${action}`, dataset: { action },
    'aria-label': label, 'aria-pressed': action === 'like' || action === 'follow' ? 'false' : null },
  icon(name, filled), h('span', { class: 'action-label', text: label }));
}

export function renderCard(card) {
  const { item } = card;
  const topic = topicOf(item);
  const hue = hueOf(topic);
  const el = h('article', {
    class: 'card',
    'aria-label': `Video by @${item.creator_id}: ${captionText(item)}`,
    dataset: {
      itemId: item.item_id, source: card.source || '', requestId: card.requestId || '',
      position: String(card.position), creatorId: item.creator_id,
    },
    style: `--hue:${hue}`,
  },
  h('div', { class: 'card-stage', 'aria-hidden': 'true' },
    h('div', { class: 'stage-topic', text: topicChip(item) }),
    h('div', { class: 'stage-duration', text: formatDuration(item.duration_ms) })),
  h('div', { class: 'card-source', text: sourceLabel(card.source) }),
  h('div', { class: 'card-info' },
    h('div', { class: 'card-creator' },
      h('span', { class: 'creator-name', text: `@${item.creator_id}` }),
      item.language ? h('span', { class: 'card-lang', text: item.language }) : null),
    h('p', { class: 'card-caption', text: captionText(item) }),
    h('p', { class: 'card-tags' },
      (item.hashtags || []).map((t) => h('span', { class: 'tag', text: `#${t}` }))),
    h('p', { class: 'card-sound' }, icon('sound'),
      h('span', { text: item.sound_id ? `sound ${item.sound_id}` : `original sound · @${item.creator_id}` }))),
  h('div', { class: 'card-actions' },
    actionButton('heart', 'Like', 'like'),
    actionButton('comment', 'Comment', 'comment'),
    actionButton('share', 'Share', 'share'),
    actionButton('follow', 'Follow', 'follow'),
    actionButton('hide', 'Not interested', 'not-interested'),
    actionButton('why', 'Why?', 'why')),
  h('div', { class: 'card-progress', role: 'progressbar', 'aria-label': 'playback',
    'aria-valuemin': '0', 'aria-valuemax': '100' }, h('div', { class: 'card-progress-bar' })));
  card.el = el;
  return el;
}

export function setPressed(card, action, pressed) {
  const button = card.el.querySelector(`[data-action="${action}"]`);
  if (!button) return;
  button.setAttribute('aria-pressed', pressed ? 'true' : 'false');
  button.classList.toggle('on', pressed);
  if (action === 'like') button.replaceChild(icon('heart', pressed), button.querySelector('svg'));
  if (action === 'follow') {
    button.replaceChild(icon(pressed ? 'followed' : 'follow'), button.querySelector('svg'));
    button.querySelector('.action-label').textContent = pressed ? 'Following' : 'Follow';
  }
}

// Playback position drawn from the time on screen: the bar fills over the video's duration.
export function drawProgress(card, elapsedMs) {
  const bar = card.el && card.el.querySelector('.card-progress-bar');
  if (!bar) return;
  const duration = Math.max(1, card.item.duration_ms);
  const fraction = (elapsedMs % duration) / duration;
  bar.style.transform = `scaleX(${fraction.toFixed(4)})`;
  card.el.querySelector('.card-progress').setAttribute('aria-valuenow', String(Math.round(fraction * 100)));
}
