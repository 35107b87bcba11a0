package main

import "fmt"

// Order is a paid cart waiting to be shipped.
type Order struct {
	ID    int
	Cents int
}

// Ship marks an order as shipped and returns a label.
func Ship(o Order) string {
	return fmt.Sprintf("order-%d", o.ID)
}

func main() {
	fmt.Println(Ship(Order{ID: 7, Cents: 1999}))
}
