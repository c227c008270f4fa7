// A bottom sheet over the feed (why this video, comment, not interested).

import { h, icon, clear } from './dom.js';

export class Sheet {
  constructor(parent, id, title) {
    this.el = h('div', { class: 'sheet-backdrop', id, hidden: true,
      onclick: (e) => { if (e.target === this.el) this.close(); } },
    h('section', { class: 'sheet', role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
      h('header', { class: 'sheet-head' },
        this.titleEl = h('h2', { text: title }),
        h('button', { type: 'button', class: 'icon-btn sheet-close', 'aria-label': 'Close',
          onclick: () => this.close() }, icon('close'))),
      this.body = h('div', { class: 'sheet-body' })));
    this.onClose = null;
    parent.append(this.el);
  }

  get isOpen() {
    return !this.el.hidden;
  }

  open(content, title) {
    if (title) this.titleEl.textContent = title;
    clear(this.body);
    if (content) this.body.append(content);
    this.el.hidden = false;
    const focusable = this.body.querySelector('textarea, input, button');
    (focusable || this.el.querySelector('.sheet-close')).focus();
  }

  close() {
    if (this.el.hidden) return;
    this.el.hidden = true;
    if (this.onClose) this.onClose();
  }
}
