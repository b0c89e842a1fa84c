// Help links ("What is an app password?"): buttons with `data-help="topic"` show the topic's
// explanation in the element named by `data-help-error` (always: a browser may not open even
// when the app could start one) and open the topic's page in the browser through the app; when
// that fails, the page's address is added to the explanation.

import { api } from '../api.js';
import { helpErrorText, helpText } from '../help.js';

export function initHelp() {
  for (const button of document.querySelectorAll('[data-help]')) {
    if (!(button instanceof HTMLElement)) continue;
    button.addEventListener('click', async (e) => {
      e.preventDefault();
      const topic = button.dataset.help ?? '';
      const text = button.dataset.helpError ? document.getElementById(button.dataset.helpError) : null;
      const explained = helpText(topic);
      if (text) {
        text.textContent = explained;
        text.hidden = !explained;
      }
      try {
        await api.openHelp(topic);
      } catch {
        if (!text) return;
        text.textContent = [explained, helpErrorText(topic)].filter(Boolean).join(' ');
        text.hidden = false;
      }
    });
  }
}
