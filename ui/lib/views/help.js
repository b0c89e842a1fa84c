// Help links ("What is an app password?"): buttons with `data-help="topic"` open the topic's
// page in the browser through the app; when that fails, the address is shown instead, in the
// element named by `data-help-error`.

import { api } from '../api.js';
import { helpErrorText } from '../help.js';

export function initHelp() {
  for (const button of document.querySelectorAll('[data-help]')) {
    if (!(button instanceof HTMLElement)) continue;
    button.addEventListener('click', async (e) => {
      e.preventDefault();
      const topic = button.dataset.help ?? '';
      const error = button.dataset.helpError ? document.getElementById(button.dataset.helpError) : null;
      if (error) error.hidden = true;
      try {
        await api.openHelp(topic);
      } catch {
        if (!error) return;
        error.textContent = helpErrorText(topic);
        error.hidden = false;
      }
    });
  }
}
