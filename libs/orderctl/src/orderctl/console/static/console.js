// Live parts: an element with data-live (an event stream of the console) and data-part (the
// URL of its own HTML) is fetched again whenever an event arrives, and once the stream
// listens, so a change between the page's rendering and the stream's start is not missed.
// An order page stops listening once the order is settled.
"use strict";

function follow(element) {
  const stream = new EventSource(element.dataset.live);
  let fetching = false;
  let again = false;

  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const response = await fetch(element.dataset.part, { headers: { Accept: "text/html" } });
      if (response.redirected) {  // signed out meanwhile: the login form
        window.location.assign(response.url);
        return;
      }
      if (response.ok) {
        element.innerHTML = await response.text();
        if (element.querySelector('[data-settled="yes"]')) {
          stream.close();
        }
      }
    } finally {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  stream.addEventListener("listening", refresh);
  stream.addEventListener("order", refresh);
}

document.querySelectorAll("[data-live]").forEach(follow);
