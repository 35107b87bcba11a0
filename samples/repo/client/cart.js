// Shopping cart kept in the browser.
export class Cart {
  constructor() {
    this.items = [];
  }

  /** Add an item; quantities merge by name. */
  add(name, priceCents, qty = 1) {
    const found = this.items.find((i) => i.name === name);
    if (found) found.qty += qty;
    else this.items.push({ name, priceCents, qty });
  }

  total() {
    return this.items.reduce((s, i) => s + i.priceCents * i.qty, 0);
  }
}
